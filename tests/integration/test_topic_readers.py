"""Readers that follow a topic without a consumer group: a topic created after the reader
started is found, and the reader reads it whole."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import OFFSET_END

from gpu.cancellations import CancellationWatch
from state.registry_store import RegistryStore
from streams import latest
from streams.admin import ensure_topics
from streams.latest import TopicReader
from streams.producer import RecordProducer
from streams.records import JobCancelled, Record
from streams.schemas import load_catalog
from streams.serde import AvroSerde
from streams.topics import TASK_CANCELLATIONS, TopicSpec


@pytest.fixture
def serde(db) -> AvroSerde:
    serde = AvroSerde(RegistryStore(db), load_catalog())
    serde.register_all()
    return serde


class Collect(TopicReader):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[Record | None] = []

    def on_record(self, key: bytes | None, record: Record | None) -> None:
        self.seen.append(record)


def _stop(job: uuid.UUID | None = None) -> JobCancelled:
    return JobCancelled(
        job_id=job or uuid.uuid4(), task_id=uuid.uuid4(), cancelled_at=datetime.now(UTC)
    )


def _until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def test_a_reader_waits_for_a_topic_created_after_it_started(bootstrap, serde, monkeypatch):
    """A reader started before its topic existed assigned no partitions and read nothing,
    for good: a worker started before the API had created tasks.cancellations never saw
    a cancellation."""
    monkeypatch.setattr(latest, "RETRY_S", 0.05)
    topic = TopicSpec(f"test.late.{uuid.uuid4().hex[:8]}", key="id", partitions=2)
    reader = Collect(bootstrap, topic, serde, OFFSET_END, 20).start()
    try:
        time.sleep(0.5)  # it has looked and found nothing
        assert not reader.ready.is_set()
        ensure_topics(bootstrap, [topic])
        producer = RecordProducer(bootstrap, serde)
        first, second = _stop(), _stop()
        producer.send(topic, "a", first)  # before the reader found the topic, likely
        producer.flush()
        _until(reader.ready.is_set)
        producer.send(topic, "b", second)
        producer.flush()
        producer.close()
        _until(lambda: len(reader.seen) == 2)
        assert {r.job_id for r in reader.seen} == {first.job_id, second.job_id}
    finally:
        reader.stop()


def test_the_cancellation_watch_knows_jobs_not_tasks(bootstrap, serde):
    watch = CancellationWatch(bootstrap, serde, fetch_wait_ms=20).start()
    try:
        _until(watch.ready.is_set)
        stopped = _stop()
        producer = RecordProducer(bootstrap, serde)
        producer.send(TASK_CANCELLATIONS, str(stopped.task_id), stopped)
        producer.flush()
        producer.close()
        _until(lambda: watch.is_cancelled(stopped.job_id))
        assert not watch.is_cancelled(stopped.task_id) and not watch.is_cancelled(uuid.uuid4())
    finally:
        watch.stop()
