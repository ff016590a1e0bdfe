"""Stream tables (faust-streaming) that keep the task counters behind /monitoring/stats.

An agent reads `tasks.events` into one table, `task-facts` (what is known of each task,
keyed by task id, with its partition). Each event is a single-key write, so a crash can
never leave half an event applied. The counters are derived: kept in memory from each
event's deltas, and rebuilt from the facts whenever a partition is (re)assigned after
recovery (faust's per-table recovery callback, before the stream resumes). Every second the counters of each changed partition are published as a
`TaskCountsSnapshot` to the compacted `monitoring.stats` topic, where any number of API
instances read and sum them.

(A first version kept the counters in a second table; the crash test showed why not: the
two changelog writes of one event are not atomic, so a kill between them lost counts.)

The faust app runs on a member thread of the processors process, started as a `mode`
service (faust's Worker wants the main thread for signal handling).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter, defaultdict
from dataclasses import asdict
from datetime import UTC, datetime

import faust
from faust.sensors.monitor import Monitor

from processors.task_counts import TaskFacts, count
from processors.task_counts import created_event as _created
from streams.producer import RecordProducer
from streams.records import (
    TaskCountsSnapshot,
    TaskCreatedEvent,
    TaskDeleted,
    TaskStatusEvent,
)
from streams.serde import AvroSerde, SerializationError
from streams.topics import MONITORING_STATS, TASK_EVENTS

logger = logging.getLogger(__name__)

APP_ID = "taskstream-task-counts"
#: The events that can change a task's facts; the rest of tasks.events is skipped undecoded.
COUNTED = frozenset(t.avro_name for t in (TaskCreatedEvent, TaskStatusEvent, TaskDeleted))


class _QuietMonitor(Monitor):
    """faust's Monitor records every message, event, table access and send for its web
    views and statistics, which this app does not serve: per-event bookkeeping dropped."""

    def on_message_in(self, *args: object, **kwargs: object) -> None:
        pass

    def on_stream_event_in(self, *args: object, **kwargs: object) -> None:
        return None

    def on_stream_event_out(self, *args: object, **kwargs: object) -> None:
        pass

    def on_message_out(self, *args: object, **kwargs: object) -> None:
        pass

    def on_table_get(self, *args: object, **kwargs: object) -> None:
        pass

    def on_table_set(self, *args: object, **kwargs: object) -> None:
        pass

    def on_send_initiated(self, *args: object, **kwargs: object) -> None:
        return None

    def on_send_completed(self, *args: object, **kwargs: object) -> None:
        pass


class CountTables:
    group_id = APP_ID

    def __init__(
        self,
        bootstrap: str,
        serde: AvroSerde,
        producer: RecordProducer,
        session_timeout_ms: int = 6000,
        publish_every_s: float = 1.0,
        single_record_batches: bool = False,
    ) -> None:
        self._serde = serde
        self._producer = producer
        self._dirty: set[int] = set()
        self._assigned: list[str] = []
        self._failure: BaseException | None = None
        self.joined = threading.Event()
        self.counted = 0
        # faust would create (and never close) a loop in this thread on first use; give it
        # the one its thread will run instead.
        self._loop = asyncio.new_event_loop()
        self.app = faust.App(
            APP_ID,
            loop=self._loop,
            broker=f"kafka://{bootstrap}",
            store="memory://",  # rebuilt from the changelog topics on start
            web_enabled=False,
            topic_partitions=TASK_EVENTS.partitions,
            topic_replication_factor=1,
            broker_session_timeout=session_timeout_ms / 1000,
            broker_heartbeat_interval=max(0.5, session_timeout_ms / 6000),
            consumer_auto_offset_reset="earliest",
            monitor=_QuietMonitor(),
            # One changelog record per batch where the broker misreports watermarks (tansu),
            # or recovery would stop short of the last records (see Settings).
            **({"producer_max_batch_size": 1} if single_record_batches else {}),
        )
        self._events = self.app.topic(
            TASK_EVENTS.name, key_serializer="raw", value_serializer="raw"
        )
        self.facts = self.app.Table("task-facts", default=None, partitions=TASK_EVENTS.partitions)
        self._counters: dict[int, Counter[str]] = defaultdict(Counter)
        self._table_recovered = self.facts.on_recovery_completed
        self.facts.on_recovery_completed = self._recovered  # faust awaits it per table
        self.app.agent(self._events, name="count-task-events")(self._consume)
        self.app.timer(publish_every_s, name="publish-task-counts")(self._publish)

    @property
    def assignment(self) -> list[str]:
        """tasks.events partitions owned, as last seen from faust's own loop (its consumer
        is not safe to touch from the heartbeat thread)."""
        return self._assigned

    def run(self, stop: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            await self.app.start()
            while not stop.is_set() and not self.app.crashed and self._failure is None:
                await asyncio.sleep(0.2)
            crash = self.app.crash_reason if self.app.crashed else self._failure
            await self.app.stop()
            if crash is not None:  # fail the member: the process exits and is restarted
                raise RuntimeError(f"stream tables crashed: {crash!r}") from crash

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    async def _consume(self, stream: faust.StreamT) -> None:
        try:
            await self._count_events(stream)
        except Exception as exc:  # faust would only restart the agent; fail the member instead
            self._failure = exc
            raise

    async def _count_events(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            name = self._serde.record_name(event.value)
            if name is not None and name not in COUNTED:
                continue  # outcomes, inference results, …: recognised by schema id, not decoded
            try:
                record = self._serde.deserialize(event.value)
            except SerializationError as exc:  # the task processor wrote it; log, never block
                logger.warning("skipping undecodable tasks.events record: %s", exc)
                continue
            task_id = getattr(record, "task_id", None)
            if task_id is None:
                continue
            key = str(task_id)
            partition = event.message.partition
            stored = self.facts.get(key)
            facts = (
                TaskFacts(**{k: v for k, v in stored.items() if k != "partition"})
                if stored
                else None
            )
            new, deltas = count(facts, record)
            if new != facts:
                if new is None:
                    del self.facts[key]
                else:
                    self.facts[key] = {**asdict(new), "partition": partition}
            if deltas:
                self._counters[partition].update(deltas)
                self._dirty.add(partition)
            self.counted += 1

    def _rebuild(self, partitions: set[int]) -> None:
        """Recompute the counters of `partitions` from the facts table."""
        for partition in partitions:
            self._counters[partition] = Counter()
        for stored in self.facts.values():
            if stored and stored["partition"] in partitions:
                facts = TaskFacts(**{k: v for k, v in stored.items() if k != "partition"})
                self._counters[stored["partition"]].update(count(None, _created(facts))[1])

    async def _recovered(self, active_tps: set, standby_tps: set) -> None:
        """After faust restored the facts of its active partitions, and before their stream
        resumes: rebuild those partitions' counters and publish them."""
        await self._table_recovered(active_tps, standby_tps)
        partitions = {tp.partition for tp in active_tps}
        self._rebuild(partitions)
        self._dirty |= partitions

    async def _publish(self) -> None:
        owned = {
            tp.partition for tp in self.app.consumer.assignment() if tp.topic == TASK_EVENTS.name
        }
        self._assigned = sorted(f"{TASK_EVENTS.name}:{p}" for p in owned)
        if owned:
            self.joined.set()
        dirty, self._dirty = self._dirty & owned, set()
        now = datetime.now(UTC)
        for partition in dirty:
            counts = {k: v for k, v in self._counters[partition].items() if v}
            record = TaskCountsSnapshot(partition=partition, counts=counts, taken_at=now)
            self._producer.send(MONITORING_STATS, f"tasks:{partition}", record)
