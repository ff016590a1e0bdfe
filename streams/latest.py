"""Readers that follow a topic on a background thread without joining a consumer group.

`TopicReader` assigns every partition at a start offset (beginning or end) and hands each
decoded record to `on_record` (optionally only records of one type, recognised by their
schema id before decoding). `LatestRecords` keeps the latest record per key of a compacted
topic (worker heartbeats, stream-table snapshots); `gpu.cancellations` follows task events.
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


class TopicReader:
    def __init__(
        self,
        bootstrap: str,
        topic: TopicSpec,
        serde: AvroSerde,
        start: int = OFFSET_BEGINNING,
        fetch_wait_ms: int = 20,
        only: type[Record] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._only = only  # records of other types are skipped before decoding
        self._topic = topic
        self._serde = serde
        self._start = start
        self._fetch_wait_ms = fetch_wait_ms
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once every partition is assigned
        self._thread = threading.Thread(target=self._run, name=f"reader-{topic.name}", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def on_record(self, key: bytes | None, record: Record | None) -> None:
        """Called on the reader's thread for each record (None for a tombstone)."""
        raise NotImplementedError

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
            consumer.assign([TopicPartition(name, p, self._start) for p in partitions])
            self.ready.set()
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=500, timeout=0.2):
                    if msg.error() is None:
                        self._decode(msg.key(), msg.value())
        except KafkaException as exc:
            logger.error("reader of %s stopped: %s", name, exc)
        finally:
            consumer.close()

    def _decode(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            self.on_record(key, None)
            return
        if self._only is not None and self._serde.record_name(value) != self._only.avro_name:
            return
        try:
            record = self._serde.deserialize(value)
        except SerializationError as exc:  # the topic's writer dead-letters what it cannot use
            logger.warning("skipping undecodable %s record: %s", self._topic.name, exc)
            return
        self.on_record(key, record)


class LatestRecords(TopicReader):
    """The latest `record_type` record per key of a compacted topic, read from the start."""

    def __init__(
        self,
        bootstrap: str,
        topic: TopicSpec,
        serde: AvroSerde,
        record_type: type[Record],
        fetch_wait_ms: int = 20,
    ) -> None:
        super().__init__(bootstrap, topic, serde, OFFSET_BEGINNING, fetch_wait_ms, record_type)
        self._type = record_type
        self._latest: dict[bytes, Record] = {}
        self._lock = threading.Lock()

    def values(self) -> list[Record]:
        with self._lock:
            return list(self._latest.values())

    def on_record(self, key: bytes | None, record: Record | None) -> None:
        if key is None:
            return
        with self._lock:
            if record is None:
                self._latest.pop(key, None)
            elif isinstance(record, self._type):
                self._latest[key] = record
