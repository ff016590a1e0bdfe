"""`partition_for` is the partition librdkafka's default partitioner really picks."""

from __future__ import annotations

import uuid

from confluent_kafka import Producer

from streams.partitioning import partition_for
from streams.topics import TASK_COMMANDS


def test_partition_for_agrees_with_the_producer(bootstrap):
    producer = Producer({"bootstrap.servers": bootstrap})
    delivered: dict[str, int] = {}
    keys = [str(uuid.uuid4()) for _ in range(120)]
    for key in keys:
        producer.produce(
            TASK_COMMANDS.name,
            key=key,
            value=b"",
            on_delivery=lambda err, msg: delivered.__setitem__(msg.key().decode(), msg.partition()),
        )
    assert producer.flush(30) == 0
    assert delivered == {k: partition_for(k, TASK_COMMANDS.partitions) for k in keys}
    assert len(set(delivered.values())) == TASK_COMMANDS.partitions
