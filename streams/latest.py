"""Readers that follow a topic on a background thread without joining a consumer group.

`TopicReader` assigns every partition at a start offset (beginning or end) and hands each
decoded record to `on_record` (optionally only records of one type, recognised by their
schema id before decoding). `LatestRecords` keeps the latest record per key of a compacted
topic (worker heartbeats, stream-table snapshots); `gpu.cancellations` follows the jobs to
stop.
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

RETRY_S, MAX_RETRY_S = 0.5, 10.0  # waits before looking for the topic again, doubling


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
        self._appeared = False  # the topic was missing at first: read it whole once it exists
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
        """Follow the topic until stopped. A topic that does not exist yet (its creator may
        still be starting) is looked for again, and a broker error reconnects, resuming where
        reading stopped: a reader that gave up would fail silently (a worker that never sees
        a cancellation again, with nothing to show for it)."""
        positions: dict[int, int] = {}  # the next offset of each partition read from
        self._delay = RETRY_S  # back to RETRY_S whenever the partitions are assigned
        while not self._stop.is_set():
            consumer = Consumer(
                {
                    "bootstrap.servers": self._bootstrap,
                    "group.id": f"taskstream.reader.{uuid.uuid4()}",  # never joins: assign()
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": self._fetch_wait_ms,
                }
            )
            try:
                self._follow(consumer, positions)
            except KafkaException as exc:
                logger.warning("reader of %s: %s; reconnecting", self._topic.name, exc)
            finally:
                consumer.close()
            self._stop.wait(self._delay)
            self._delay = min(self._delay * 2, MAX_RETRY_S)

    def _follow(self, consumer: Consumer, positions: dict[int, int]) -> None:
        """Read until stopped; return at once when the topic has no partitions yet."""
        name = self._topic.name
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        if not partitions:
            logger.info("reader of %s: no such topic yet; looking again", name)
            self._appeared = True
            return
        start = OFFSET_BEGINNING if self._appeared else self._start
        consumer.assign([TopicPartition(name, p, positions.get(p, start)) for p in partitions])
        self.ready.set()
        self._delay = RETRY_S
        while not self._stop.is_set():
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                if msg.error() is None:
                    positions[msg.partition()] = msg.offset() + 1
                    self._decode(msg.key(), msg.value())

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
