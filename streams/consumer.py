"""A consumer-group member that decodes Avro records, hands them to a handler and
dead-letters what it cannot use.

Delivery is at-least-once: an offset is stored only after its message was handled (or
safely written to the dead-letter topic), so a crash replays unfinished messages and
handlers must be idempotent. A message that cannot be decoded, or that the handler
rejects with `PoisonMessage`, goes to `<topic>.dlq` with its original key, bytes and the
reason in headers; the consumer keeps going.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streams.producer import RecordProducer
from streams.records import Record
from streams.serde import AvroSerde, SerializationError
from streams.topics import DLQ_SUFFIX, TopicSpec

logger = logging.getLogger(__name__)


#: A dead letter carries its record's bytes only below this size: a producer refuses a record
#: over its `message.max.bytes` (1,000,000 by default), and a poison record near that size plus
#: the reason headers would otherwise fail its dead-lettering on every restart.
DLQ_COPY_MAX_BYTES = 900_000
DLQ_REASON_MAX_CHARS = 2_000


def dead_letter(producer: RecordProducer, msg: Message, exc: Exception, group_id: str) -> None:
    """Queue `msg` on its topic's DLQ: original key and bytes, the reason in headers. A
    record too large to copy is dead-lettered without its bytes (`dlq.value.omitted` says
    how many); it stays readable at its source topic, partition and offset.

    The caller flushes `producer` before storing the message's offset.
    """
    reason = (str(exc) or type(exc).__name__)[:DLQ_REASON_MAX_CHARS]
    logger.warning(
        "%s[%d]@%d -> %s%s: %s",
        msg.topic(),
        msg.partition(),
        msg.offset(),
        msg.topic(),
        DLQ_SUFFIX,
        reason,
    )
    headers = {
        "dlq.error": reason,
        "dlq.error.type": type(exc).__name__,
        "dlq.source.topic": msg.topic(),
        "dlq.source.partition": str(msg.partition()),
        "dlq.source.offset": str(msg.offset()),
        "dlq.consumer.group": group_id,
    }
    key, value = msg.key(), msg.value()
    if len(key or b"") + len(value or b"") > DLQ_COPY_MAX_BYTES:
        headers["dlq.value.omitted"] = f"{len(value or b'')} bytes, too large to copy"
        key, value = key[:1024] if key else key, None
    producer.send_raw(msg.topic() + DLQ_SUFFIX, key, value, headers=headers)


def group_config(
    bootstrap: str, group_id: str, session_timeout_ms: int, fetch_wait_ms: int, **extra: object
) -> dict:
    """Consumer settings every taskstream group member shares."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(500, session_timeout_ms // 6),
        "fetch.wait.max.ms": fetch_wait_ms,
        **extra,
    }


def next_batch(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Wait up to `timeout` for one message, then take whatever else is already fetched.

    librdkafka's `consume(n, timeout)` waits the whole timeout unless n messages arrive, which
    would add the timeout to every hop's latency under light load.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)]


class PoisonMessage(Exception):
    """A handler's verdict that a record can never be processed (it goes to the DLQ)."""


@dataclass(frozen=True)
class Delivery:
    topic: str
    partition: int
    offset: int
    key: str | None
    record: Record


Handler = Callable[[Delivery], None]


class RecordConsumer:
    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topics: Sequence[TopicSpec],
        serde: AvroSerde,
        handler: Handler,
        producer: RecordProducer,
        session_timeout_ms: int = 6000,
        fetch_wait_ms: int = 20,
    ) -> None:
        self.group_id = group_id
        self._topics = list(topics)
        self._serde = serde
        self._handler = handler
        self._producer = producer  # dead letters, and what handlers produce: flushed per batch
        self._consumer = Consumer(
            group_config(
                bootstrap,
                group_id,
                session_timeout_ms,
                fetch_wait_ms,
                **{
                    "enable.auto.offset.store": False,  # store only what was handled
                    "enable.auto.commit": True,
                    "auto.commit.interval.ms": 1000,
                    "partition.assignment.strategy": "cooperative-sticky",
                },
            )
        )
        self._assigned: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self.joined = threading.Event()
        self.handled = 0
        self.dead_lettered = 0

    @property
    def assignment(self) -> list[str]:
        with self._lock:
            return sorted(f"{t}:{p}" for t, p in self._assigned)

    def run(self, stop: threading.Event, poll_timeout: float = 0.5) -> None:
        """Consume until `stop` is set; then commit what was handled and leave the group."""
        self._consumer.subscribe(
            [t.name for t in self._topics],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        try:
            while not stop.is_set():
                batch = next_batch(self._consumer, 500, poll_timeout)
                for msg in batch:
                    self._one(msg)
                if batch:
                    # Records the handlers produced must be durable before their inputs'
                    # offsets are stored: one flush per batch, not per record.
                    self._producer.flush()
                    for msg in batch:
                        self._consumer.store_offsets(message=msg)
        finally:
            try:
                self._consumer.commit(asynchronous=False)
            except Exception as exc:  # nothing stored since the last auto-commit is fine too
                logger.debug("final commit: %s", exc)
            self._consumer.close()

    def _one(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                logger.warning("%s: consumer error: %s", self.group_id, err)
            return
        key = msg.key().decode(errors="replace") if msg.key() is not None else None
        try:
            record = self._serde.deserialize(msg.value())
            self._handler(Delivery(msg.topic(), msg.partition(), msg.offset(), key, record))
            self.handled += 1
        except (SerializationError, PoisonMessage) as exc:
            self._dead_letter(msg, exc)

    def _dead_letter(self, msg: Message, exc: Exception) -> None:
        dead_letter(self._producer, msg, exc, self.group_id)
        self.dead_lettered += 1

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._assigned |= {(p.topic, p.partition) for p in partitions}
        self.joined.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._assigned -= {(p.topic, p.partition) for p in partitions}
