"""The stream tables' faust app against a real broker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from processors.count_tables import CountTables
from streams.producer import RecordProducer
from streams.records import TaskCountsDelta, TaskCountsSnapshot
from streams.schemas import load_catalog
from streams.serde import AvroSerde
from streams.topics import MONITORING_STATS, TASK_COUNTS
from tests.integration.kafka_helpers import read_topic
from tests.unit.conftest import MemoryRegistry


@pytest.fixture
def serde() -> AvroSerde:
    return AvroSerde(MemoryRegistry(), load_catalog())  # one registry: the same schema ids


@pytest.fixture
def tables(bootstrap: str, serde: AvroSerde, tmp_path: Path) -> Iterator[CountTables]:
    producer = RecordProducer(bootstrap, serde)
    tables = CountTables(bootstrap, serde, producer, tmp_path / "faust", single_record_batches=True)
    stop = threading.Event()
    thread = threading.Thread(target=tables.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert tables.joined.wait(60), "the stream tables never joined their group"
        yield tables
    finally:
        stop.set()
        thread.join(30)
        producer.close()


def _in_loop(tables: CountTables, coro) -> object:
    """Run a coroutine on the faust app's own loop, where its consumer must be used."""
    return asyncio.run_coroutine_threadsafe(coro, tables.app.loop).result(30)


def test_deltas_dropped_before_the_first_commit_are_read_again_after_a_rebalance(
    bootstrap: str, serde: AvroSerde, tables: CountTables
):
    """After a rebalance's recovery faust seeks each stream partition back to its committed
    offset, to read again what its fetcher took and dropped meanwhile. aiokafka skips a
    partition with nothing committed, so the first deltas of a fresh partition that came
    during a rebalance were lost for good (a restarted stack once counted a task's status
    changes but not the task). Here the drop is made deterministic: the position is moved
    past two deltas before they are read, then faust's post-recovery seek runs."""
    consumer = tables.app.consumer
    [tp] = [
        tp for tp in consumer.assignment() if tp.topic == TASK_COUNTS.name and tp.partition == 0
    ]

    async def pause() -> None:
        consumer.pause_partitions([tp])

    _in_loop(tables, pause())
    producer = RecordProducer(bootstrap, serde)
    for offset, delta in enumerate(({"*|total|": 1, "*|status|PENDING": 1}, {"*|total|": 1})):
        record = TaskCountsDelta(
            partition=0, source_offsets={"tasks.commands": offset}, deltas=delta
        )
        producer.send_raw(TASK_COUNTS, "0", serde.serialize(record), partition=0)
    producer.close()

    async def skip_them() -> None:
        await consumer.seek(tp, 2)
        consumer.resume_partitions([tp])

    _in_loop(tables, skip_them())
    time.sleep(2)
    assert tables.applied == 0, "the two deltas must not have been read yet"

    _in_loop(tables, consumer.perform_seek())  # what recovery runs before streams resume
    deadline = time.monotonic() + 30
    while tables.applied < 2:
        assert time.monotonic() < deadline, "the deltas skipped before any commit were lost"
        time.sleep(0.2)
    time.sleep(1.5)  # the next snapshot of the partition
    published = [
        serde.deserialize(m.value()) for m in read_topic(bootstrap, MONITORING_STATS.name, 100, 5)
    ]
    latest = [r for r in published if isinstance(r, TaskCountsSnapshot) and r.partition == 0][-1]
    assert latest.counts == {"*|total|": 2, "*|status|PENDING": 1}
