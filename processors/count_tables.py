"""Stream tables (faust-streaming) that keep the task counters behind /monitoring/stats.

The counting is aggregated upstream (see `task_counts`): the task processor publishes one
`TaskCountsDelta` per partition about twice a second to `tasks.counts`, the sum of its
batches' changes, so this app handles a few records a second rather than several per task.
An agent applies each delta to the `task-counts` table, keyed `<partition>|<group>`; every
value carries the source offsets applied to it, so a delta read twice (after a crash of
either side) is counted once, per key, even when a crash fell between the writes of one
delta's keys. Hours of created_minute buckets older than the 24 h window are deleted as the
partition's next delta passes by. Every second the counters of each changed partition are
published as a `TaskCountsSnapshot` to the compacted `monitoring.stats` topic, where any
number of API instances read and sum them.

(Two earlier versions counted every task event here: one kept counters in a second table,
whose two changelog writes per event were not atomic, so a kill between them lost counts;
the next kept per-task facts, correct but several table writes per task, the processors
process's largest cost.)

The faust app runs on a member thread of the processors process, started as a `mode`
service (faust's Worker wants the main thread for signal handling).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import faust
import uvloop
from faust.sensors.monitor import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from processors import task_counts
from streams.producer import RecordProducer
from streams.records import TaskCountsDelta, TaskCountsSnapshot
from streams.serde import AvroSerde, SerializationError
from streams.topics import MONITORING_STATS, TASK_COUNTS

logger = logging.getLogger(__name__)

APP_ID = "taskstream-task-counts"


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


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """After a rebalance's recovery faust seeks every stream partition back to its committed
    offset, because its fetcher may have fetched records meanwhile and dropped them (see
    faust-streaming#216). aiokafka does not seek a partition without a committed offset, so
    what was dropped there stayed lost: the first deltas of a partition whose group had
    never committed, if they came during a rebalance (a restarted embedded stack, whose
    broker starts empty, lost a new task's first delta this way when a processors member
    joined late: 3 restarts in 14). Such partitions are read again from their beginning;
    the table applies each delta once however often it is read."""

    async def seek_to_committed(self) -> dict[TP, int]:
        committed = await super().seek_to_committed()
        uncommitted = [
            tp for tp, offset in committed.items() if tp.topic == TASK_COUNTS.name and not offset
        ]
        if uncommitted:
            consumer = self._ensure_consumer()
            await self.call_thread(consumer.seek_to_beginning, *uncommitted)
            logger.info(
                "reading %s from the beginning: no offset committed yet",
                ", ".join(f"{tp.topic}:{tp.partition}" for tp in sorted(uncommitted)),
            )
        return committed


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)


class CountTables:
    group_id = APP_ID

    def __init__(
        self,
        bootstrap: str,
        serde: AvroSerde,
        producer: RecordProducer,
        datadir: Path,
        session_timeout_ms: int = 6000,
        publish_every_s: float = 1.0,
        single_record_batches: bool = False,
        leave_group: bool = True,
    ) -> None:
        """`leave_group=False`: `run` returns without stopping the faust app, so its consumer
        never leaves the group, and the process must then end with `os._exit` (as
        `TaskProcessor`'s; see `taskstream.cli.cmd_processors`). The tables lose nothing:
        deltas carry their source offsets, and a replay applies each once."""
        self._leave_group = leave_group
        self._serde = serde
        self._producer = producer
        self._dirty: set[int] = set()
        self._pruned: dict[int, int] = {}  # partition -> minute of its last pruning
        self._assigned: list[str] = []
        self._failure: BaseException | None = None
        self.joined = threading.Event()
        self.applied = 0
        # faust would create (and never close) a loop in this thread on first use; give it
        # the one its thread will run instead (uvloop: less overhead per callback).
        self._loop = uvloop.new_event_loop()
        self.app = _App(
            APP_ID,
            loop=self._loop,
            broker=f"kafka://{bootstrap}",
            store="memory://",  # rebuilt from the changelog topics on start
            datadir=datadir,  # faust creates it even for memory stores (default: the cwd)
            web_enabled=False,
            topic_partitions=TASK_COUNTS.partitions,
            topic_replication_factor=1,
            broker_session_timeout=session_timeout_ms / 1000,
            broker_heartbeat_interval=max(0.5, session_timeout_ms / 6000),
            consumer_auto_offset_reset="earliest",
            monitor=_QuietMonitor(),
            # One changelog record per batch where the broker misreports watermarks (tansu),
            # or recovery would stop short of the last records (see Settings).
            **({"producer_max_batch_size": 1} if single_record_batches else {}),
        )
        self._deltas = self.app.topic(
            TASK_COUNTS.name, key_serializer="raw", value_serializer="raw"
        )
        self.counts = self.app.Table("task-counts", default=None, partitions=TASK_COUNTS.partitions)
        self._table_recovered = self.counts.on_recovery_completed
        self.counts.on_recovery_completed = self._recovered  # faust awaits it per table
        self.app.agent(self._deltas, name="apply-task-count-deltas")(self._consume)
        self.app.timer(publish_every_s, name="publish-task-counts")(self._publish)

    @property
    def assignment(self) -> list[str]:
        """tasks.counts partitions owned, as last seen from faust's own loop (its consumer
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
            if self._leave_group:
                await self.app.stop()
            if crash is not None:  # fail the member: the process exits and is restarted
                raise RuntimeError(f"stream tables crashed: {crash!r}") from crash

        try:
            loop.run_until_complete(main())
        finally:
            if self._leave_group:  # else faust's tasks stay pending until the process ends
                loop.close()

    async def _consume(self, stream: faust.StreamT) -> None:
        try:
            async for event in stream.events():
                self._apply(event.value, event.message.partition)
        except Exception as exc:  # faust would only restart the agent; fail the member instead
            self._failure = exc
            raise

    def _apply(self, value: bytes, partition: int) -> None:
        try:
            record = self._serde.deserialize(value)
        except SerializationError as exc:  # the task processor wrote it; log, never block
            logger.warning("skipping undecodable tasks.counts record: %s", exc)
            return
        if not isinstance(record, TaskCountsDelta) or record.partition != partition:
            logger.warning("skipping %s on tasks.counts partition %d", record.avro_name, partition)
            return
        for key, changes in task_counts.table_keys(partition, record.deltas).items():
            new = task_counts.apply(self.counts.get(key), record.source_offsets, changes)
            if new is not None:
                self.counts[key] = new
        self._prune(partition)
        self._dirty.add(partition)
        self.applied += 1

    def _prune(self, partition: int) -> None:
        """Drop the partition's hours of created_minute buckets past the window (a table can
        only be written while handling one of its partition's records), once a minute."""
        now = datetime.now(UTC)
        if self._pruned.get(partition) == task_counts.minute(now):
            return
        self._pruned[partition] = task_counts.minute(now)
        for key in [k for k in self.counts if task_counts.partition_of(k) == partition]:
            if task_counts.expired(key, now):
                del self.counts[key]

    async def _recovered(self, active_tps: set, standby_tps: set) -> None:
        """After faust restored the counters of its active partitions, and before their
        stream resumes: publish them (an API may have missed the last snapshots)."""
        await self._table_recovered(active_tps, standby_tps)
        self._dirty |= {tp.partition for tp in active_tps}

    async def _publish(self) -> None:
        owned = {
            tp.partition for tp in self.app.consumer.assignment() if tp.topic == TASK_COUNTS.name
        }
        self._assigned = sorted(f"{TASK_COUNTS.name}:{p}" for p in owned)
        if owned:
            self.joined.set()
        dirty, self._dirty = self._dirty & owned, set()
        if not dirty:
            return
        now = datetime.now(UTC)
        totals: dict[int, Counter[str]] = {p: Counter() for p in dirty}
        for key, value in self.counts.items():
            partition = task_counts.partition_of(key)
            if partition in totals and value and not task_counts.expired(key, now):
                totals[partition].update(value["counts"])
        for partition, counts in totals.items():
            record = TaskCountsSnapshot(
                partition=partition, counts={k: v for k, v in counts.items() if v}, taken_at=now
            )
            self._producer.send(MONITORING_STATS, f"tasks:{partition}", record)
