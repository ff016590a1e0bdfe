"""A message that cannot be decoded, or that its handler rejects, goes to the topic's DLQ
with the reason and the original bytes, and the consumer carries on."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest

from state.registry_store import RegistryStore
from streams.consumer import Delivery, PoisonMessage, RecordConsumer
from streams.producer import RecordProducer
from streams.records import CancelTask
from streams.schemas import load_catalog
from streams.serde import AvroSerde
from tests.integration.kafka_helpers import fresh_topic, read_topic


@pytest.fixture
def serde(db) -> AvroSerde:
    serde = AvroSerde(RegistryStore(db), load_catalog())
    serde.register_all()
    return serde


def _cancel(reason: str | None = None) -> CancelTask:
    return CancelTask(
        command_id=uuid.uuid4(), task_id=uuid.uuid4(), issued_at=datetime.now(UTC), reason=reason
    )


def test_poison_goes_to_the_dlq_and_good_records_still_flow(bootstrap, serde):
    topic = fresh_topic(bootstrap, "dlq")
    producer = RecordProducer(bootstrap, serde)
    good_1, rejected, good_2 = _cancel("first"), _cancel("reject me"), _cancel("second")
    producer.send(topic, "k1", good_1)
    producer.send_raw(topic, "k2", b"\x00\x7f\xff\xff\xffdefinitely not avro")
    producer.send_raw(topic, "k3", b"plain text, no wire format")
    producer.send(topic, "k4", rejected)
    producer.send(topic, "k5", good_2)
    producer.flush()

    handled: list[Delivery] = []
    stop = threading.Event()

    def handle(delivery: Delivery) -> None:
        if delivery.record.reason == "reject me":
            raise PoisonMessage("cancel reason is not allowed")
        handled.append(delivery)
        if len(handled) == 2:
            stop.set()

    group = f"test-{uuid.uuid4()}"
    consumer = RecordConsumer(bootstrap, group, [topic], serde, handle, producer)
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "consumer never saw the record after the poison"

    assert [d.record for d in handled] == [good_1, good_2]
    assert consumer.dead_lettered == 3
    dead = read_topic(bootstrap, topic.dlq, 3)
    assert [m.key() for m in dead] == [b"k2", b"k3", b"k4"]
    assert dead[0].value() == b"\x00\x7f\xff\xff\xffdefinitely not avro", "original bytes kept"
    headers = [dict((k, v.decode()) for k, v in m.headers()) for m in dead]
    assert "unknown schema id 2147483647" in headers[0]["dlq.error"]
    assert "magic byte" in headers[1]["dlq.error"]
    assert headers[2]["dlq.error"] == "cancel reason is not allowed"
    assert headers[2]["dlq.error.type"] == "PoisonMessage"
    assert [h["dlq.source.offset"] for h in headers] == ["1", "2", "3"]
    assert all(
        h["dlq.source.topic"] == topic.name and h["dlq.consumer.group"] == group for h in headers
    )


def test_a_poison_record_too_large_to_copy_is_dead_lettered_without_its_bytes(bootstrap, serde):
    # the producer takes the record; its copy plus the reason headers would pass the limit,
    # which used to stop the consumer on every restart (it crash-looped the task processors)
    topic = fresh_topic(bootstrap, "dlqbig")
    producer = RecordProducer(bootstrap, serde)
    producer.send_raw(topic, "big", b"\x00" * 999_700)
    after = _cancel("after")
    producer.send(topic, "k", after)
    producer.flush()

    handled: list[Delivery] = []
    stop = threading.Event()

    def handle(delivery: Delivery) -> None:
        handled.append(delivery)
        stop.set()

    consumer = RecordConsumer(bootstrap, f"test-{uuid.uuid4()}", [topic], serde, handle, producer)
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and [d.record for d in handled] == [after]
    [dead] = read_topic(bootstrap, topic.dlq, 1)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert dead.key() == b"big" and dead.value() is None
    assert headers["dlq.value.omitted"] == "999700 bytes, too large to copy"
    assert (headers["dlq.source.topic"], headers["dlq.source.offset"]) == (topic.name, "0")
    assert "unknown schema id" in headers["dlq.error"]


def test_handled_offsets_are_committed_so_a_restart_does_not_replay(bootstrap, serde):
    topic = fresh_topic(bootstrap, "commit")
    producer = RecordProducer(bootstrap, serde)
    first, second = _cancel("one"), _cancel("two")
    producer.send(topic, "a", first)
    producer.flush()
    group = f"test-{uuid.uuid4()}"

    def consume_until(expected: int) -> list:
        seen: list = []
        stop = threading.Event()

        def handle(d: Delivery) -> None:
            seen.append(d.record)
            if len(seen) == expected:
                stop.set()

        thread = threading.Thread(
            target=RecordConsumer(bootstrap, group, [topic], serde, handle, producer).run,
            args=(stop,),
        )
        thread.start()
        thread.join(60)
        return seen

    assert consume_until(1) == [first]
    producer.send(topic, "b", second)
    producer.flush()
    assert consume_until(1) == [second], (
        "the second member of the group resumes after the committed offset"
    )
