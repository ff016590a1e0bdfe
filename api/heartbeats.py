"""Reads `workers.heartbeats` into memory: who is alive, ready, and doing what.

Feeds `/health` now and the worker monitoring routes later. A thread reads every partition
from the beginning (the topic is compacted by worker id) without joining a group.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streams.records import WorkerHeartbeat, WorkerRole
from streams.serde import AvroSerde, SerializationError
from streams.topics import WORKER_HEARTBEATS

logger = logging.getLogger(__name__)


class HeartbeatMonitor:
    def __init__(
        self, bootstrap: str, serde: AvroSerde, max_age_s: float, fetch_wait_ms: int = 20
    ) -> None:
        self._bootstrap = bootstrap
        self._serde = serde
        self._max_age = timedelta(seconds=max_age_s)
        self._fetch_wait_ms = fetch_wait_ms
        self._latest: dict[str, WorkerHeartbeat] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat-monitor", daemon=True)

    def start(self) -> HeartbeatMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def snapshot(self) -> list[WorkerHeartbeat]:
        with self._lock:
            return list(self._latest.values())

    def ready(self, role: WorkerRole, now: datetime | None = None) -> list[WorkerHeartbeat]:
        """Members of `role` whose latest heartbeat is recent and says ready."""
        now = now or datetime.now(UTC)
        return [
            hb
            for hb in self.snapshot()
            if hb.role == role and hb.ready and now - hb.timestamp <= self._max_age
        ]

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": f"taskstream.api.heartbeats.{uuid.uuid4()}",  # never joins: assign() below
                "enable.auto.commit": False,
                "fetch.wait.max.ms": self._fetch_wait_ms,
            }
        )
        try:
            metadata = consumer.list_topics(WORKER_HEARTBEATS.name, timeout=10)
            partitions = metadata.topics[WORKER_HEARTBEATS.name].partitions
            consumer.assign(
                [TopicPartition(WORKER_HEARTBEATS.name, p, OFFSET_BEGINNING) for p in partitions]
            )
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=200, timeout=0.5):
                    if msg.error() is None:
                        self._apply(msg.value())
        except KafkaException as exc:
            logger.error("heartbeat monitor stopped: %s", exc)
        finally:
            consumer.close()

    def _apply(self, value: bytes | None) -> None:
        try:
            record = self._serde.deserialize(value)
        except SerializationError as exc:
            logger.warning("skipping undecodable heartbeat: %s", exc)
            return
        if isinstance(record, WorkerHeartbeat):
            with self._lock:
                self._latest[record.worker_id] = record
