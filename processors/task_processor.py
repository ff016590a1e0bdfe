"""The task processor: the single writer of task state.

Consumes `tasks.commands` and the workers' status topics (co-partitioned by task id, range
assignor, so one member owns all of a task's messages). For each partition's share of a
consumed batch it runs one Postgres transaction that checks the partition's ownership epoch,
loads the tasks (locked), applies `task_machine.handle` to every message in order, and
writes the new states, the command outcomes (with NOTIFY for the API), the consumed offsets
and an outbox of the events and jobs to publish. After commit the outbox is published and
cleared; leftovers from a crash are published when the partition is next assigned.

A crash at any point therefore loses nothing and applies nothing twice: state and offsets
commit together, and a record published twice carries the same ids and versions.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from processors.task_machine import TaskState, handle
from state import offsets, task_store
from state.db import Database
from streams.consumer import PoisonMessage
from streams.producer import RecordProducer
from streams.records import CommandOutcome, InferenceJob, Record, TrainingJob
from streams.serde import AvroSerde, SerializationError
from streams.topics import (
    DLQ_SUFFIX,
    INFERENCE_JOBS,
    INFERENCE_STATUS,
    TASK_COMMANDS,
    TASK_EVENTS,
    TRAINING_JOBS,
    TRAINING_STATUS,
)

logger = logging.getLogger(__name__)

GROUP = "taskstream.processors.tasks"
OutboxRow = tuple[int, str, str, bytes]  # outbox id, topic, key, serialized value
INPUTS = (TASK_COMMANDS, INFERENCE_STATUS, TRAINING_STATUS)


class TaskProcessor:
    group_id = GROUP

    def __init__(
        self,
        bootstrap: str,
        db: Database,
        serde: AvroSerde,
        producer: RecordProducer,
        owner: str,
        session_timeout_ms: int = 6000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._serde = serde
        self._producer = producer
        self._owner = owner
        self._clock = clock
        self._epochs: dict[int, int] = {}
        self._lock = threading.Lock()
        self.joined = threading.Event()
        self.applied = 0
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": GROUP,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,  # offsets live in Postgres with the state
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": max(500, session_timeout_ms // 6),
                # range keeps partition N of every input topic on the same member
                "partition.assignment.strategy": "range",
            }
        )

    @property
    def assignment(self) -> list[str]:
        with self._lock:
            return sorted(f"{t.name}:{p}" for p in self._epochs for t in INPUTS)

    def run(self, stop: threading.Event) -> None:
        self._consumer.subscribe(
            [t.name for t in INPUTS],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        try:
            while not stop.is_set():
                messages = self._consumer.consume(num_messages=1000, timeout=0.2)
                if messages:
                    self._process(messages)
        finally:
            self._consumer.close()

    # --- rebalancing -------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions})
        with self._db.transaction() as conn:
            epochs = {p: task_store.claim(conn, GROUP, p, self._owner) for p in numbers}
            stored = {t.name: offsets.load(conn, GROUP, t.name) for t in INPUTS}
        for tp in partitions:
            tp.offset = stored[tp.topic].get(tp.partition, OFFSET_BEGINNING)
        for p in numbers:
            self._publish_leftovers(p)
        with self._lock:
            self._epochs.update(epochs)
        consumer.assign(partitions)
        self.joined.set()
        logger.info("owns partitions %s (epochs %s)", numbers, epochs)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                self._epochs.pop(tp.partition, None)
        consumer.unassign()

    # --- processing --------------------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        by_partition: dict[int, list[Message]] = defaultdict(list)
        for msg in messages:
            err = msg.error()
            if err is None:
                by_partition[msg.partition()].append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                logger.warning("consumer error: %s", err)
        for partition, batch in by_partition.items():
            with self._lock:
                epoch = self._epochs.get(partition)
            if epoch is None:
                continue  # revoked while we were consuming: the new owner replays it
            try:
                published = self._apply(partition, epoch, batch)
            except task_store.Fenced as exc:
                logger.warning("%s; dropping its batch", exc)
                with self._lock:
                    self._epochs.pop(partition, None)
                continue
            if published:
                self._send_and_clear(published)

    def _apply(self, partition: int, epoch: int, batch: list[Message]) -> list[OutboxRow]:
        """Apply a partition's batch in one transaction; return the outbox rows it wrote."""
        decoded: list[tuple[Message, Record]] = []
        for msg in batch:
            try:
                decoded.append((msg, self._decode(msg)))
            except (SerializationError, PoisonMessage) as exc:
                self._dead_letter(msg, exc)
        now = self._clock()
        with self._db.transaction() as conn:
            task_store.check_owner(conn, GROUP, partition, epoch)
            states: dict[UUID, TaskState | None] = dict(
                task_store.load(conn, {record.task_id for _, record in decoded})
            )
            before = dict(states)
            outcomes: list[CommandOutcome] = []
            outbox: list[tuple[str, str, bytes]] = []
            for _, record in decoded:
                decision = handle(states.get(record.task_id), record, now)
                states[record.task_id] = decision.state
                key = str(record.task_id)
                for event in decision.events:
                    outbox.append((TASK_EVENTS.name, key, self._serde.serialize(event)))
                for job in decision.jobs:
                    topic = TRAINING_JOBS if isinstance(job, TrainingJob) else INFERENCE_JOBS
                    outbox.append((topic.name, key, self._serde.serialize(job)))
                if decision.outcome is not None:
                    outcomes.append(decision.outcome)
                    outbox.append((TASK_EVENTS.name, key, self._serde.serialize(decision.outcome)))
            changed = [s for tid, s in states.items() if s is not None and s is not before.get(tid)]
            task_store.save(conn, changed)
            task_store.delete(conn, [t for t, s in states.items() if s is None and before.get(t)])
            task_store.record_outcomes(conn, outcomes)
            for msg in batch:
                offsets.store(conn, GROUP, msg.topic(), msg.partition(), msg.offset())
            ids = task_store.add_to_outbox(conn, partition, outbox)
        self.applied += len(decoded)
        return [(i, *row) for i, row in zip(ids, outbox, strict=True)]

    def _decode(self, msg: Message) -> Record:
        record = self._serde.deserialize(msg.value())
        if not hasattr(record, "task_id") or isinstance(record, InferenceJob | TrainingJob):
            raise PoisonMessage(f"{record.avro_name} is not a task command or worker report")
        if msg.key() is not None and msg.key().decode(errors="replace") != str(record.task_id):
            raise PoisonMessage(
                "message key must be the task_id, or the task's single writer breaks"
            )
        return record

    def _dead_letter(self, msg: Message, exc: Exception) -> None:
        logger.warning("%s[%d]@%d is poison: %s", msg.topic(), msg.partition(), msg.offset(), exc)
        self._producer.send_raw(
            msg.topic() + DLQ_SUFFIX,
            msg.key(),
            msg.value(),
            headers={
                "dlq.error": str(exc),
                "dlq.error.type": type(exc).__name__,
                "dlq.source.topic": msg.topic(),
                "dlq.source.partition": str(msg.partition()),
                "dlq.source.offset": str(msg.offset()),
                "dlq.consumer.group": GROUP,
            },
        )
        self._producer.flush()  # durable before the offset commits with the batch

    # --- outbox ------------------------------------------------------------------------

    def _publish_leftovers(self, partition: int) -> None:
        with self._db.transaction() as conn:
            rows = task_store.pending_outbox(conn, partition)
        if rows:
            logger.info(
                "publishing %d outbox records left from before (partition %d)", len(rows), partition
            )
            self._send_and_clear(rows)

    def _send_and_clear(self, rows: list[OutboxRow]) -> None:
        for _, topic, key, value in rows:
            self._producer.send_raw(topic, key, bytes(value))
        self._producer.flush()
        with self._db.transaction() as conn:
            task_store.clear_outbox(conn, [r[0] for r in rows])
