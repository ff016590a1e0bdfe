"""A job topic's consumer-group member that runs jobs off the poll loop.

The poll thread only fetches, decodes and queues jobs, heartbeats the group and commits;
one runner thread takes jobs from the queue (a batch of compatible ones where the runner
allows) and runs them. A job that takes an hour therefore never trips
`max.poll.interval.ms`, and cancellations and rebalances are served meanwhile.

Offsets: a job's offset is committed only after its reports were acknowledged by the broker
(one producer flush covers the jobs run since the last, taken whenever the queue runs dry),
and only up to the first unfinished job of each partition, so a crash loses nothing. Commits
are synchronous, at most every 100 ms: that is the window in which a restarted worker could
run a finished job again (the task processor drops such a duplicate's reports).

Backpressure: the member stops taking jobs while `max_queued` wait (and pauses its
partitions if that lasts), so jobs stay in Kafka instead of piling up in memory. (Holding them locally deprives no other member:
only this one owns their partitions; a rebalance drops the queued ones for the new owner.)
Rebalance: jobs of revoked partitions that have not started are dropped (their new owner
runs them); the one running finishes, and its offset is committed if still owned.
"""

from __future__ import annotations

import logging
import threading
import time
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
ACK_EVERY = 100  # jobs run before their reports must be acknowledged, under load
ACK_AFTER_S = 0.05  # or this long
COMMIT_EVERY_S = 0.1  # offsets are committed at most this often (always on revoke and stop)
PAUSE_AFTER_S = 5.0  # a queue full this long pauses the partitions (see `_hold_back`)


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
        max_queued: int = 64,
        pause_after_s: float = PAUSE_AFTER_S,
    ) -> None:
        self.group_id = group_id
        self._topic = topic
        self._serde = serde
        self._runner = runner
        self._producer = producer
        self._max_batch = max(1, max_batch)
        self._max_queued = max(self._max_batch, max_queued)
        self._pause_after_s = pause_after_s
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
        self._full_since: float | None = None
        self._committed_at = 0.0
        self._failure: BaseException | None = None
        self.joined = threading.Event()
        self.handled = 0
        self.pauses = 0

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
                if self._hold_back():
                    stop.wait(0.01)  # librdkafka keeps what it fetched meanwhile
                else:
                    for msg in next_batch(self._consumer, 100, 0.2):
                        self._take(msg)
                self._commit_finished(force=False)
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

    def _hold_back(self) -> bool:
        """Whether to take no more jobs now: the queue is full.

        A short stall just stops consuming (librdkafka buffers, and its own thresholds stop
        the fetcher). Past `pause_after_s` the partitions are paused, so polling (which serves
        rebalances and keeps `max.poll.interval.ms` happy) returns no jobs; pausing costs
        about half a second of refetching on resume, hence not for short stalls.
        """
        with self._cond:
            full = len(self._queue) >= self._max_queued
            owned = [TopicPartition(t, p) for t, p in self._unfinished]
        now = time.monotonic()
        if not full:
            self._full_since = None
            if self._paused:
                self._consumer.resume(owned)
                self._paused = False
            return False
        if self._full_since is None:
            self._full_since = now
        if not self._paused and owned and now - self._full_since >= self._pause_after_s:
            self._consumer.pause(owned)
            self._paused = True
            self.pauses += 1
        if self._paused:
            # serves callbacks; a partition assigned meanwhile may not be paused yet, so a
            # message can still come: take it (the queue may run one over) rather than lose it
            msg = self._consumer.poll(0.2)
            if msg is not None:
                self._take(msg)
        return True

    def _commit_finished(self, only: set[TP] | None = None, force: bool = True) -> None:
        """Commit, per partition, up to the first job not yet finished (unless `force`, at
        most every `COMMIT_EVERY_S`)."""
        now = time.monotonic()
        if not force and now - self._committed_at < COMMIT_EVERY_S:
            return
        self._committed_at = now
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

    def _next_jobs(self, stop: threading.Event, wait: bool = True) -> list[Queued]:
        """The oldest queued job and up to `max_batch - 1` later ones with its batch key
        (waiting for one only if `wait`)."""
        with self._cond:
            while wait and not self._queue and not stop.is_set():
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
        """Run jobs; hand them over for committing once their reports are acknowledged.

        One flush (wait for acknowledgements) covers every job run since the last: taken as
        soon as the queue runs dry, or after `ACK_EVERY` jobs or `ACK_AFTER_S` under load.
        """
        ran: list[Queued] = []
        since = time.monotonic()
        try:
            while not stop.is_set():
                batch = self._next_jobs(stop, wait=not ran)
                if batch:
                    self._runner.run([item.job for item in batch])
                    ran += batch
                due = len(ran) >= ACK_EVERY or time.monotonic() - since >= ACK_AFTER_S
                if ran and (not batch or due):
                    self._acknowledge(ran)
                    ran, since = [], time.monotonic()
            if ran:
                self._acknowledge(ran)
        except BaseException as exc:
            logger.exception("%s: runner failed", self.group_id)
            self._failure = exc
            stop.set()

    def _acknowledge(self, ran: list[Queued]) -> None:
        self._producer.flush()  # reports acknowledged before the offsets commit
        with self._cond:
            self._finished.extend(ran)
            self.handled += len(ran)
