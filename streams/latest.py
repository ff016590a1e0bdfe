"""The latest record per key of a compacted topic, kept in memory by a background thread.

Reads every partition from the beginning by assignment (no consumer group), so each reader
sees everything. Used by the API for worker heartbeats and stream-table snapshots.
"""

from __future__ import annotations

import logging
import threading
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streams.records import Record
from streams.serde import AvroSerde, SerializationError
from streams.topics import TopicSpec

logger = logging.getLogger(__name__)


class LatestRecords:
    def __init__(
        self,
        bootstrap: str,
        topic: TopicSpec,
        serde: AvroSerde,
        record_type: type[Record],
        fetch_wait_ms: int = 20,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._serde = serde
        self._type = record_type
        self._fetch_wait_ms = fetch_wait_ms
        self._latest: dict[bytes, Record] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"latest-{topic.name}", daemon=True)

    def start(self) -> LatestRecords:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def values(self) -> list[Record]:
        with self._lock:
            return list(self._latest.values())

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": f"taskstream.reader.{uuid.uuid4()}",  # never joins: assign() below
                "enable.auto.commit": False,
                "fetch.wait.max.ms": self._fetch_wait_ms,
            }
        )
        name = self._topic.name
        try:
            partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
            consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=200, timeout=0.2):
                    if msg.error() is None and msg.key() is not None:
                        self._apply(msg.key(), msg.value())
        except KafkaException as exc:
            logger.error("reader of %s stopped: %s", name, exc)
        finally:
            consumer.close()

    def _apply(self, key: bytes, value: bytes | None) -> None:
        if value is None:  # tombstone
            with self._lock:
                self._latest.pop(key, None)
            return
        try:
            record = self._serde.deserialize(value)
        except SerializationError as exc:
            logger.warning("skipping undecodable %s record: %s", self._topic.name, exc)
            return
        if isinstance(record, self._type):
            with self._lock:
                self._latest[key] = record
