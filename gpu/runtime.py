"""A worker's consumer-group members for its job topics, running jobs off the poll loop.

Jobs arrive in lanes: each served queue's job topic (ADR 11), and for inference its priority
topic, where the task processor puts the jobs of tasks with priority > 0 (ADR 10). Each lane
is its own consumer group member with its own poll thread, so a lane full of waiting jobs
never keeps another from taking more. One runner thread takes the queued job of highest
priority (the oldest among equals; a batch of compatible ones where the runner allows) and
runs it. A job that takes an hour therefore never trips `max.poll.interval.ms`, and
cancellations and rebalances are served meanwhile.

Offsets: a job's offset is committed only after its reports were acknowledged by the broker
(one producer flush covers the jobs run since the last, taken whenever the queue runs dry),
and only up to the first unfinished job of each partition, so a crash loses nothing. Commits
are synchronous, at most every 100 ms: that is the window in which a restarted worker could
run a finished job again (the task processor drops such a duplicate's reports).

Backpressure: a lane stops taking jobs while `max_queued` of its jobs wait (and pauses its
partitions if that lasts), so jobs stay in Kafka instead of piling up in memory. (Holding
them locally deprives no other member: only this one owns their partitions; a rebalance
drops the queued ones for the new owner.) Rebalance: jobs of revoked partitions that have
not started are dropped (their new owner runs them); the one running finishes, and its
offset is committed if still owned.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
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
    lane: _Lane
    tp: TP
    offset: int
    job: Job
    key: Hashable | None


class _Lane:
    """One job topic read by one consumer-group member: its offsets and backpressure."""

    def __init__(self, group_id: str, topic: TopicSpec, config: dict) -> None:
        self.group_id = group_id
        self.topic = topic
        self.consumer = Consumer({**config, "group.id": group_id})
        self.unfinished: dict[TP, set[int]] = {}  # offsets taken but not finished
        self.next_commit: dict[TP, int] = {}  # highest offset seen + 1, per partition
        self.finished: list[Queued] = []
        self.paused = False
        self.full_since: float | None = None
        self.committed_at = 0.0
        self.pauses = 0
        self.joined = threading.Event()


class JobConsumer:
    def __init__(
        self,
        bootstrap: str,
        lanes: Sequence[tuple[str, TopicSpec]],
        serde: AvroSerde,
        runner: JobRunner,
        producer: RecordProducer,
        session_timeout_ms: int = 6000,
        fetch_wait_ms: int = 20,
        max_batch: int = 1,
        max_queued: int = 64,
        pause_after_s: float = PAUSE_AFTER_S,
    ) -> None:
        """Reads each of `lanes`' topics in its consumer group (the first names the consumer
        in logs and threads); `max_queued` bounds the jobs each lane holds."""
        group_id = self.group_id = lanes[0][0]
        self._serde = serde
        self._runner = runner
        self._producer = producer
        self._max_batch = max(1, max_batch)
        self._max_queued = max(self._max_batch, max_queued)
        self._pause_after_s = pause_after_s
        config = group_config(
            bootstrap,
            group_id,
            session_timeout_ms,
            fetch_wait_ms,
            **{
                "enable.auto.commit": False,  # committed by hand once reports are acked
                "partition.assignment.strategy": "cooperative-sticky",
            },
        )
        self._lanes = [_Lane(group, topic, config) for group, topic in lanes]
        self._cond = threading.Condition()
        # (-priority, arrival, job): the highest priority first, the oldest among equals
        self._queue: list[tuple[int, int, Queued]] = []
        self._arrivals = itertools.count()
        self._failure: BaseException | None = None
        self.joined = threading.Event()  # once every lane has its partitions
        self.handled = 0

    @property
    def assignment(self) -> list[str]:
        with self._cond:
            return sorted(f"{t}:{p}" for lane in self._lanes for t, p in lane.unfinished)

    def reserved(self) -> dict[str, int]:
        """Jobs taken and not started, by queue (their lanes' offsets are not committed)."""
        with self._cond:
            return dict(Counter(entry[2].job.queue for entry in self._queue))

    @property
    def pauses(self) -> int:
        return sum(lane.pauses for lane in self._lanes)

    def run(self, stop: threading.Event) -> None:
        for lane in self._lanes:
            lane.consumer.subscribe(
                [lane.topic.name],
                on_assign=functools.partial(self._on_assign, lane),
                on_revoke=functools.partial(self._on_revoke, lane),
                on_lost=functools.partial(self._on_revoke, lane),
            )
        threads = [
            threading.Thread(
                target=self._work, args=(stop,), name=f"{self.group_id}-runner", daemon=True
            ),
            *(
                threading.Thread(
                    target=self._poll_lane,
                    args=(lane, stop),
                    name=f"{lane.group_id}-poll",
                    daemon=True,
                )
                for lane in self._lanes[1:]
            ),
        ]
        for thread in threads:
            thread.start()
        try:
            # the first lane polls on this thread
            self._poll(self._lanes[0], stop, lambda: all(t.is_alive() for t in threads))
        finally:
            stop.set()
            with self._cond:
                self._cond.notify_all()
            for thread in threads:
                thread.join(timeout=60)
            for lane in self._lanes:
                self._commit_finished(lane)
                lane.consumer.close()
        if self._failure is not None:
            raise self._failure

    def _poll_lane(self, lane: _Lane, stop: threading.Event) -> None:
        """A further lane's poll thread: a failure stops the whole member."""
        try:
            self._poll(lane, stop)
        except BaseException as exc:
            logger.exception("%s: poll thread failed", lane.group_id)
            self._failure = exc
            stop.set()

    # --- poll threads, one a lane ------------------------------------------------------

    def _poll(
        self, lane: _Lane, stop: threading.Event, alive: Callable[[], bool] = lambda: True
    ) -> None:
        while not stop.is_set() and alive():
            if self._hold_back(lane):
                stop.wait(0.01)  # librdkafka keeps what it fetched meanwhile
            else:
                for msg in next_batch(lane.consumer, 100, 0.2):
                    self._take(lane, msg)
            self._commit_finished(lane, force=False)

    def _take(self, lane: _Lane, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                logger.warning("%s: consumer error: %s", lane.group_id, err)
            return
        tp = (msg.topic(), msg.partition())
        try:
            job = self._runner.check(self._serde.deserialize(msg.value()))
        except (SerializationError, PoisonMessage) as exc:
            dead_letter(self._producer, msg, exc, lane.group_id)
            self._producer.flush()
            with self._cond:
                lane.next_commit[tp] = msg.offset() + 1
            return
        item = Queued(lane, tp, msg.offset(), job, self._runner.batch_key(job))
        with self._cond:
            if tp not in lane.unfinished:
                return  # revoked meanwhile
            lane.unfinished[tp].add(msg.offset())
            lane.next_commit[tp] = msg.offset() + 1
            priority = getattr(job, "priority", 0)  # training jobs have none
            heapq.heappush(self._queue, (-priority, next(self._arrivals), item))
            self._cond.notify()

    def _hold_back(self, lane: _Lane) -> bool:
        """Whether the lane takes no more jobs now: `max_queued` of its jobs wait.

        A short stall just stops consuming (librdkafka buffers, and its own thresholds stop
        the fetcher). Past `pause_after_s` the partitions are paused, so polling (which serves
        rebalances and keeps `max.poll.interval.ms` happy) returns no jobs; pausing costs
        about half a second of refetching on resume, hence not for short stalls.
        """
        with self._cond:
            # a count, not a counter kept beside the queue: at most a few hundred entries
            full = sum(entry[2].lane is lane for entry in self._queue) >= self._max_queued
            owned = [TopicPartition(t, p) for t, p in lane.unfinished]
        now = time.monotonic()
        if not full:
            lane.full_since = None
            if lane.paused:
                lane.consumer.resume(owned)
                lane.paused = False
            return False
        if lane.full_since is None:
            lane.full_since = now
        if not lane.paused and owned and now - lane.full_since >= self._pause_after_s:
            lane.consumer.pause(owned)
            lane.paused = True
            lane.pauses += 1
        if lane.paused:
            # serves callbacks; a partition assigned meanwhile may not be paused yet, so a
            # message can still come: take it (the queue may run one over) rather than lose it
            msg = lane.consumer.poll(0.2)
            if msg is not None:
                self._take(lane, msg)
        return True

    def _commit_finished(self, lane: _Lane, only: set[TP] | None = None, force: bool = True):
        """Commit, per partition of the lane, up to the first job not yet finished (unless
        `force`, at most every `COMMIT_EVERY_S`)."""
        now = time.monotonic()
        if not force and now - lane.committed_at < COMMIT_EVERY_S:
            return
        lane.committed_at = now
        with self._cond:
            finished, lane.finished = lane.finished, []
            for item in finished:
                lane.unfinished.get(item.tp, set()).discard(item.offset)
            offsets = []
            for tp, pending in lane.unfinished.items():
                if only is not None and tp not in only:
                    continue
                target = min(pending) if pending else lane.next_commit.get(tp)
                if target is not None:
                    offsets.append(TopicPartition(tp[0], tp[1], target))
        if offsets:
            try:
                lane.consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:  # the next commit carries the same offsets
                logger.warning("%s: commit failed: %s", lane.group_id, exc)

    def _on_assign(self, lane: _Lane, consumer: Consumer, partitions: list[TopicPartition]):
        with self._cond:
            for tp in partitions:
                lane.unfinished.setdefault((tp.topic, tp.partition), set())
        if lane.paused:
            consumer.pause(partitions)
        lane.joined.set()
        if all(each.joined.is_set() for each in self._lanes):
            self.joined.set()

    def _on_revoke(self, lane: _Lane, consumer: Consumer, partitions: list[TopicPartition]):
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._commit_finished(lane, only=revoked)
        with self._cond:
            self._queue = [entry for entry in self._queue if entry[2].tp not in revoked]
            heapq.heapify(self._queue)
            for tp in revoked:
                lane.unfinished.pop(tp, None)
                lane.next_commit.pop(tp, None)

    # --- runner thread -----------------------------------------------------------------

    def _next_jobs(self, stop: threading.Event, wait: bool = True) -> list[Queued]:
        """The queued job of highest priority (the oldest among equals) and up to
        `max_batch - 1` more with its batch key, in the same order (waiting for one only if
        `wait`)."""
        with self._cond:
            while wait and not self._queue and not stop.is_set():
                self._cond.wait(0.2)
            if not self._queue:
                return []
            first = heapq.heappop(self._queue)[2]
            batch = [first]
            if first.key is not None and self._max_batch > 1:
                same = sorted(e for e in self._queue if e[2].key == first.key)
                taken = same[: self._max_batch - 1]
                if taken:
                    ids = {id(e) for e in taken}
                    self._queue = [e for e in self._queue if id(e) not in ids]
                    heapq.heapify(self._queue)
                    batch += [e[2] for e in taken]
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
            for item in ran:
                item.lane.finished.append(item)
            self.handled += len(ran)
