"""A job topic's consumer-group member that runs jobs off the poll loop.

The poll thread only fetches, decodes and queues jobs, heartbeats the group and commits;
one runner thread takes jobs from the queue (a batch of compatible ones where the runner
allows) and runs them. A job that takes an hour therefore never trips
`max.poll.interval.ms`, and cancellations and rebalances are served meanwhile.

Offsets: a job's offset is committed only after its reports were acknowledged by the broker
(the producer is flushed after each run), and only up to the first unfinished job of each
partition, so a crash loses nothing; the commit is synchronous right after the flush, which
keeps the window in which a restarted worker could run a finished job again to that one
round trip (the task processor drops such a duplicate's reports).

Backpressure: the member pauses its partitions while `max_queued` jobs wait, so jobs stay
in Kafka (where other members can take them) instead of piling up in one process.
Rebalance: jobs of revoked partitions that have not started are dropped (their new owner
runs them); the one running finishes, and its offset is committed if still owned.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streams.consumer import PoisonMessage, dead_letter, group_config, next_batch
from streams.producer import RecordProducer
from streams.serde import AvroSerde, SerializationError
from streams.topics import TopicSpec

if TYPE_CHECKING:
    from gpu.worker import Job, JobRunner

logger = logging.getLogger(__name__)

TP = tuple[str, int]


@dataclass
class Queued:
    tp: TP
    offset: int
    job: Job
    key: Hashable | None


class JobConsumer:
    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topic: TopicSpec,
        serde: AvroSerde,
        runner: JobRunner,
        producer: RecordProducer,
        session_timeout_ms: int = 6000,
        fetch_wait_ms: int = 20,
        max_batch: int = 1,
        max_queued: int = 8,
    ) -> None:
        self.group_id = group_id
        self._topic = topic
        self._serde = serde
        self._runner = runner
        self._producer = producer
        self._max_batch = max(1, max_batch)
        self._max_queued = max(self._max_batch, max_queued)
        self._consumer = Consumer(
            group_config(
                bootstrap,
                group_id,
                session_timeout_ms,
                fetch_wait_ms,
                **{
                    "enable.auto.commit": False,  # committed by hand once reports are acked
                    "partition.assignment.strategy": "cooperative-sticky",
                },
            )
        )
        self._cond = threading.Condition()
        self._queue: deque[Queued] = deque()
        self._unfinished: dict[TP, set[int]] = {}  # offsets taken but not finished
        self._next_commit: dict[TP, int] = {}  # highest offset seen + 1, per partition
        self._finished: list[Queued] = []
        self._paused = False
        self._failure: BaseException | None = None
        self.joined = threading.Event()
        self.handled = 0

    @property
    def assignment(self) -> list[str]:
        with self._cond:
            return sorted(f"{t}:{p}" for t, p in self._unfinished)

    def run(self, stop: threading.Event) -> None:
        self._consumer.subscribe(
            [self._topic.name],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        worker = threading.Thread(
            target=self._work, args=(stop,), name=f"{self.group_id}-runner", daemon=True
        )
        worker.start()
        try:
            while not stop.is_set() and worker.is_alive():
                for msg in next_batch(self._consumer, 100, 0.2):
                    self._take(msg)
                self._apply_backpressure()
                self._commit_finished()
        finally:
            stop.set()
            with self._cond:
                self._cond.notify_all()
            worker.join(timeout=60)
            self._commit_finished()
            self._consumer.close()
        if self._failure is not None:
            raise self._failure

    # --- poll thread -------------------------------------------------------------------

    def _take(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                logger.warning("%s: consumer error: %s", self.group_id, err)
            return
        tp = (msg.topic(), msg.partition())
        try:
            job = self._runner.check(self._serde.deserialize(msg.value()))
        except (SerializationError, PoisonMessage) as exc:
            dead_letter(self._producer, msg, exc, self.group_id)
            self._producer.flush()
            with self._cond:
                self._next_commit[tp] = msg.offset() + 1
            return
        item = Queued(tp, msg.offset(), job, self._runner.batch_key(job))
        with self._cond:
            if tp not in self._unfinished:
                return  # revoked meanwhile
            self._unfinished[tp].add(msg.offset())
            self._next_commit[tp] = msg.offset() + 1
            self._queue.append(item)
            self._cond.notify()

    def _apply_backpressure(self) -> None:
        with self._cond:
            full = len(self._queue) >= self._max_queued
            owned = [TopicPartition(t, p) for t, p in self._unfinished]
        if full and not self._paused and owned:
            self._consumer.pause(owned)
            self._paused = True
        elif not full and self._paused:
            self._consumer.resume(owned)
            self._paused = False

    def _commit_finished(self, only: set[TP] | None = None) -> None:
        """Commit, per partition, up to the first job not yet finished."""
        with self._cond:
            finished, self._finished = self._finished, []
            for item in finished:
                self._unfinished.get(item.tp, set()).discard(item.offset)
            offsets = []
            for tp, pending in self._unfinished.items():
                if only is not None and tp not in only:
                    continue
                target = min(pending) if pending else self._next_commit.get(tp)
                if target is not None:
                    offsets.append(TopicPartition(tp[0], tp[1], target))
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:  # the next commit carries the same offsets
                logger.warning("%s: commit failed: %s", self.group_id, exc)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._cond:
            for tp in partitions:
                self._unfinished.setdefault((tp.topic, tp.partition), set())
        if self._paused:
            consumer.pause(partitions)
        self.joined.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._commit_finished(only=revoked)
        with self._cond:
            self._queue = deque(q for q in self._queue if q.tp not in revoked)
            for tp in revoked:
                self._unfinished.pop(tp, None)
                self._next_commit.pop(tp, None)

    # --- runner thread -----------------------------------------------------------------

    def _next_jobs(self, stop: threading.Event) -> list[Queued]:
        """The oldest queued job and up to `max_batch - 1` later ones with its batch key."""
        with self._cond:
            while not self._queue and not stop.is_set():
                self._cond.wait(0.2)
            if not self._queue:
                return []
            first = self._queue.popleft()
            batch = [first]
            if first.key is not None and self._max_batch > 1:
                for item in list(self._queue):
                    if len(batch) >= self._max_batch:
                        break
                    if item.key == first.key:
                        batch.append(item)
                        self._queue.remove(item)
            return batch

    def _work(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                batch = self._next_jobs(stop)
                if not batch:
                    continue
                self._runner.run([item.job for item in batch])
                self._producer.flush()  # reports acknowledged before the offsets commit
                with self._cond:
                    self._finished.extend(batch)
                    self.handled += len(batch)
        except BaseException as exc:
            logger.exception("%s: runner failed", self.group_id)
            self._failure = exc
            stop.set()
