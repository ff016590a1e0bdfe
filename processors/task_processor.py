"""The task processor: the single writer of task state.

Consumes `tasks.commands` and the workers' status topics (co-partitioned by task id, range
assignor, so one member owns all of a task's messages). For each consumed batch it takes the
tasks' states, applies `task_machine.handle` to every message in order, and writes in one
statement (one round trip, one transaction) the new states, the command outcomes (with
NOTIFY for the API), the consumed offsets, an outbox of the events and jobs to publish, and
each partition's pending change to the task counters (see `task_counts`), which a batch
about twice a second moves into the outbox as one `TaskCountsDelta` for the stream tables.
The write first locks the batch's partition ownership rows and checks their epochs: a member
that lost a partition (a zombie) writes nothing, and as only a partition's owner writes its
tasks, the plain read before is as good as a locked one.

The states come from what the member itself wrote (`KnownStates`): as the single writer of
its partitions it knows them without asking Postgres, so a batch reads only tasks it has not
seen, and a create of an unseen id is decided as new and written on the condition that no
such task exists (if one does, the write does nothing and the batch is decided again with it
read). Under steady load a batch is then one round trip: its write.

After commit the outbox rows are produced without waiting; each acknowledged row is deleted
by the next batch's write, and a delivery failure stops the member. Leftovers from a crash
are published when the partition is next assigned, so every row is published at least
once, in order. A `JobCancelled` (a job its attempt's end left running) goes to
`tasks.cancellations`, which the workers' cancellation watches follow instead of every task
event.

A crash at any point therefore loses nothing and applies nothing twice: state and offsets
commit together, and a record published twice carries the same ids and versions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from uuid import UUID

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from processors import task_counts
from processors.task_counts import PendingCounts
from processors.task_machine import (
    DEFAULT_ROUTING,
    Malformed,
    TaskState,
    check_report,
    handle,
    job_topic,
)
from state import offsets, task_store
from state.db import Database
from state.task_store import BatchWrite
from streams.consumer import PoisonMessage, dead_letter, group_config, next_batch
from streams.producer import DeliveryError, RecordProducer
from streams.queues import Queues
from streams.records import (
    CommandOutcome,
    CreateTask,
    InferenceJob,
    Record,
    TaskCountsDelta,
    TrainingJob,
    WorkerReport,
)
from streams.serde import AvroSerde, SerializationError
from streams.topics import (
    INFERENCE_STATUS,
    TASK_COMMANDS,
    TASK_COUNTS,
    TASK_EVENTS,
    TRAINING_STATUS,
)

logger = logging.getLogger(__name__)

GROUP = "taskstream.processors.tasks"
PUBLISH_COUNTS_EVERY_S = 0.5  # how long a partition's counter changes may wait unpublished
OutboxRow = tuple[int, int, str, str, bytes]  # outbox id, partition, topic, key, value
INPUTS = (TASK_COMMANDS, INFERENCE_STATUS, TRAINING_STATUS)
KNOWN_STATES = 5_000  # per member; tasks no batch touched for longest are read again if needed


class KnownStates:
    """The tasks' states as this member last wrote or read them, for the partitions it owns:
    at most `limit`, those no batch touched for longest dropped first."""

    def __init__(self, limit: int = KNOWN_STATES) -> None:
        self._limit = limit
        self._states: dict[UUID, tuple[int, TaskState]] = {}

    def __contains__(self, task_id: UUID) -> bool:
        return task_id in self._states

    def __len__(self) -> int:
        return len(self._states)

    def get(self, task_id: UUID) -> TaskState:
        return self._states[task_id][1]

    def update(self, states: dict[UUID, tuple[int, TaskState | None]]) -> None:
        """Take states a batch wrote or read (None: the task is gone)."""
        for task_id, (partition, state) in states.items():
            self._states.pop(task_id, None)
            if state is not None:
                self._states[task_id] = (partition, state)
        while len(self._states) > self._limit:
            del self._states[next(iter(self._states))]

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the tasks of partitions this member no longer owns (their next owner may
        change them)."""
        gone = set(partitions)
        self._states = {t: ps for t, ps in self._states.items() if ps[0] not in gone}


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
        fetch_wait_ms: int = 20,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        leave_group: bool = True,
        queues: Queues = DEFAULT_ROUTING,
    ) -> None:
        """`leave_group=False`: `run` returns without leaving the consumer group, and the
        process must then end with `os._exit` (a garbage-collected consumer leaves on its
        way out). See `taskstream.cli.cmd_processors` for why. `queues`: the installation's
        (ADR 11)."""
        self._leave_group = leave_group
        self._queues = queues
        self._db = db
        self._serde = serde
        self._producer = producer
        self._owner = owner
        self._clock = clock
        self._epochs: dict[int, int] = {}
        self._published: list[int] = []  # outbox ids acknowledged, to delete with the next batch
        self._pending: dict[int, PendingCounts] = {}  # as stored in pending_counts
        self._known = KnownStates()
        self._delivery_errors: list[KafkaError] = []
        self._lock = threading.Lock()
        self.joined = threading.Event()
        self.applied = 0
        self._consumer = Consumer(
            group_config(
                bootstrap,
                GROUP,
                session_timeout_ms,
                fetch_wait_ms,
                **{
                    "enable.auto.commit": False,  # offsets live in Postgres with the state
                    # range keeps partition N of every input topic on the same member
                    "partition.assignment.strategy": "range",
                },
            )
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
                messages = next_batch(self._consumer, 1000, 0.2)
                self._producer.poll()
                self._raise_delivery_errors()
                self._process(messages)  # also publishes due counts when idle
            self._producer.flush()
        finally:
            if self._leave_group:
                self._consumer.close()

    # --- rebalancing -------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions})
        with self._db.transaction() as conn:
            epochs = {p: task_store.claim(conn, GROUP, p, self._owner) for p in numbers}
            stored = {t.name: offsets.load(conn, GROUP, t.name) for t in INPUTS}
            pending = task_store.pending_counts(conn, GROUP, numbers, time.monotonic())
        for tp in partitions:
            tp.offset = stored[tp.topic].get(tp.partition, OFFSET_BEGINNING)
        for p in numbers:
            self._publish_leftovers(p)
        with self._lock:
            self._epochs.update(epochs)
        self._pending.update(pending)
        consumer.assign(partitions)
        self.joined.set()
        logger.info("owns partitions %s (epochs %s)", numbers, epochs)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # What is in flight lands before the next owner republishes the leftovers.
        self._producer.flush()
        self._forget(tp.partition for tp in partitions)
        consumer.unassign()

    def _forget(self, partitions: Iterable[int]) -> None:
        """Drop the epochs, pending counts and known states of partitions this member no
        longer owns (a next owner reads them from Postgres)."""
        partitions = list(partitions)
        with self._lock:
            for partition in partitions:
                self._epochs.pop(partition, None)
        for partition in partitions:
            self._pending.pop(partition, None)
        self._known.forget(partitions)

    # --- processing --------------------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        batch: list[Message] = []
        for msg in messages:
            err = msg.error()
            if err is None:
                batch.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                logger.warning("consumer error: %s", err)
        partitions = {m.partition() for m in batch} | self._counts_due(time.monotonic())
        with self._lock:
            epochs = {p: e for p, e in self._epochs.items() if p in partitions}
        # Messages of partitions revoked meanwhile are left to their new owner, which replays them.
        batch = [m for m in batch if m.partition() in epochs]
        if epochs:
            self._send_and_clear(self._apply(epochs, batch))

    def _apply(self, epochs: dict[int, int], batch: list[Message]) -> list[OutboxRow]:
        """Apply a batch with one read of its tasks and one write: a single statement, so one
        transaction, of the new states, the verdicts, the offsets and the outbox rows, which
        it returns.

        The write also deletes the outbox rows acknowledged since the previous batch: a crash
        before it commits only means they are published once more (same ids, harmless). When
        a partition turns out to belong to another epoch nothing is written: its messages
        are left to the owner and the rest of the batch is applied again. When a task decided
        as new exists after all, nothing is written either: it is read, and the batch decided
        again.
        """
        decoded: list[tuple[Message, Record]] = []
        for msg in batch:
            try:
                decoded.append((msg, self._decode(msg)))
            except (SerializationError, PoisonMessage) as exc:
                dead_letter(self._producer, msg, exc, GROUP)
        if len(decoded) < len(batch):
            self._producer.flush()  # dead letters durable before their offsets commit
        published = self._published[:]
        read: dict[UUID, TaskState | None] = {}  # tasks found to exist after all
        while epochs:
            # in consumption order: the last offset of each (topic, partition) wins
            offsets = {(m.topic(), m.partition()): m.offset() for m in batch}
            write, states = self._decide(decoded, epochs, published, offsets, read)
            written = task_store.apply_batch(self._db, write)
            if written.present:
                read.update(dict.fromkeys(written.present))
                read.update(task_store.load(self._db, written.present))
            if not written.fenced and not written.present:
                del self._published[: len(published)]
                self.applied += len(decoded)
                self._pending.update(write.pending)
                for partition in write.flushed:
                    del self._pending[partition]
                self._known.update(states)
                return [(i, *row) for i, row in zip(written.outbox_ids, write.outbox, strict=True)]
            for partition in written.fenced:
                logger.warning(
                    "partition %d no longer belongs to epoch %d: leaving its messages to the owner",
                    partition,
                    epochs[partition],
                )
            self._forget(written.fenced)
            epochs = {p: e for p, e in epochs.items() if p not in written.fenced}
            decoded = [(m, r) for m, r in decoded if m.partition() in epochs]
            batch = [m for m in batch if m.partition() in epochs]
        return []

    def _decide(
        self,
        decoded: list[tuple[Message, Record]],
        epochs: dict[int, int],
        published: list[int],
        offsets: dict[tuple[str, int], int],
        read: dict[UUID, TaskState | None],
    ) -> tuple[BatchWrite, dict[UUID, tuple[int, TaskState | None]]]:
        """Run the state machine over the batch's records, in order: the write it makes, and
        every task's state after it (with its partition) for `KnownStates`."""
        now = self._clock()
        states, absent = self._states(decoded, read)
        before = dict(states)
        partition_of: dict[UUID, int] = {}
        outcomes: list[CommandOutcome] = []
        rows: list[tuple[int, str, str, bytes]] = []
        for msg, record in decoded:
            decision = handle(states.get(record.task_id), record, now, self._queues)
            states[record.task_id] = decision.state
            key = str(record.task_id)
            partition = msg.partition()
            partition_of[record.task_id] = partition
            for event in decision.events:
                value = self._serde.serialize(event)
                rows.append((partition, TASK_EVENTS.name, key, value))
            for job in decision.jobs:
                rows.append(
                    (partition, job_topic(job, self._queues).name, key, self._serde.serialize(job))
                )
            if decision.outcome is not None:
                outcomes.append(decision.outcome)
                outcome = self._serde.serialize(decision.outcome)
                rows.append((partition, TASK_EVENTS.name, key, outcome))
        pending, flushed, deltas = self._counts(epochs, offsets, partition_of, before, states)
        write = BatchWrite(
            group=GROUP,
            epochs=epochs,
            published=published,
            absent=absent,
            offsets=offsets,
            saved=[s for t, s in states.items() if s is not None and s is not before.get(t)],
            deleted=[t for t, s in states.items() if s is None and before.get(t)],
            outcomes=outcomes,
            outbox=rows + deltas,
            pending=pending,
            flushed=flushed,
        )
        return write, {t: (partition_of[t], s) for t, s in states.items()}

    def _states(
        self, decoded: list[tuple[Message, Record]], read: dict[UUID, TaskState | None]
    ) -> tuple[dict[UUID, TaskState | None], list[UUID]]:
        """The batch's tasks as they are before it: (states, the ids taken for new without a
        read). A task is known to this member, or was read for this batch, or is created by
        its first message here (new unless the write finds it), or else is read now."""
        states: dict[UUID, TaskState | None] = {}
        absent: list[UUID] = []
        unseen: list[UUID] = []
        seen: set[UUID] = set()
        for _, record in decoded:
            task_id = record.task_id
            if task_id in seen:
                continue
            seen.add(task_id)
            if task_id in self._known:
                states[task_id] = self._known.get(task_id)
            elif task_id in read:
                states[task_id] = read[task_id]
            elif isinstance(record, CreateTask):
                absent.append(task_id)
            else:
                unseen.append(task_id)
        if unseen:
            found = task_store.load(self._db, unseen)
            states.update((t, found.get(t)) for t in unseen)
        return states, absent

    def _counts_due(self, now: float) -> set[int]:
        """Partitions whose pending counter changes are due for publishing."""
        return {p for p, counts in self._pending.items() if _due(counts, now)}

    def _counts(
        self,
        epochs: dict[int, int],
        offsets: dict[tuple[str, int], int],
        partition_of: dict[UUID, int],
        before: dict[UUID, TaskState | None],
        after: dict[UUID, TaskState | None],
    ) -> tuple[dict[int, PendingCounts], list[int], list[tuple[int, str, str, bytes]]]:
        """The batch's counter changes added to each partition's pending sum: (the sums to
        store, the partitions whose sums are due and are published instead, their outbox rows
        of one `TaskCountsDelta` each). One delta per partition about twice a second, not one
        per batch: the stream tables' work is per delta (ADR 9)."""
        now = time.monotonic()
        source: dict[int, dict[str, int]] = defaultdict(dict)
        for (topic, partition), offset in offsets.items():
            source[partition][topic] = offset
        changes: dict[int, Counter[str]] = defaultdict(Counter)
        for task_id, partition in partition_of.items():
            if after.get(task_id) is not before.get(task_id):
                changes[partition].update(task_counts.deltas(before.get(task_id), after[task_id]))
        pending: dict[int, PendingCounts] = {}
        flushed: list[int] = []
        rows = []
        for partition in sorted(epochs):
            current = self._pending.get(partition)
            moved = {k: v for k, v in changes[partition].items() if v}
            if moved:
                current = task_counts.add(current, moved, source[partition], now)
            if current is None:
                continue
            if not _due(current, now):
                if moved:
                    pending[partition] = current
                continue
            flushed.append(partition)
            if current.deltas:
                delta = TaskCountsDelta(
                    partition=partition,
                    source_offsets=current.source_offsets,
                    deltas=current.deltas,
                )
                value = self._serde.serialize(delta)
                rows.append((partition, TASK_COUNTS.name, str(partition), value))
        return pending, flushed, rows

    def _decode(self, msg: Message) -> Record:
        record = self._serde.deserialize(msg.value())
        if not hasattr(record, "task_id") or isinstance(record, InferenceJob | TrainingJob):
            raise PoisonMessage(f"{record.avro_name} is not a task command or worker report")
        if msg.key() is not None and msg.key().decode(errors="replace") != str(record.task_id):
            raise PoisonMessage(
                "message key must be the task_id, or the task's single writer breaks"
            )
        if isinstance(record, WorkerReport):  # a malformed command is rejected, with an outcome
            try:
                check_report(record)
            except Malformed as exc:
                raise PoisonMessage(str(exc)) from None
        return record

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
        """Produce outbox rows; each is deleted in the first transaction after its
        acknowledgement (delivery callbacks run on this thread, in `poll` and `flush`)."""
        for outbox_id, partition, topic, key, value in rows:

            def delivered(err: KafkaError | None, _: Message, outbox_id: int = outbox_id) -> None:
                if err is None:
                    self._published.append(outbox_id)
                else:
                    self._delivery_errors.append(err)

            self._producer.send_raw(
                topic,
                key,
                bytes(value),
                on_delivery=delivered,
                # counter deltas go to the partition they count, where its table lives
                partition=partition if topic == TASK_COUNTS.name else None,
            )

    def _raise_delivery_errors(self) -> None:
        if self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            # the rows stay in the outbox; the restarted member publishes them on assignment
            raise DeliveryError(f"{len(errors)} outbox records not delivered: {errors[0]}")


def _due(counts: PendingCounts, now: float) -> bool:
    """Whether a partition's pending counter changes have waited long enough to publish."""
    return now - counts.since >= PUBLISH_COUNTS_EVERY_S
