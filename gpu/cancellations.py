"""Which tasks were cancelled, as seen on `tasks.events`: lets a worker stop a running job.

Reads every partition from the end (only what happens from now on) without a consumer
group, and remembers the most recent cancelled task ids (bounded). The task processor
drops any report that arrives after CANCELLED, so a cancellation this reader misses costs
work, never correctness.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from uuid import UUID

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from streams.records import TaskStatus, TaskStatusEvent
from streams.serde import AvroSerde, SerializationError
from streams.topics import TASK_EVENTS

logger = logging.getLogger(__name__)

REMEMBERED = 10_000


class CancellationWatch:
    def __init__(self, bootstrap: str, serde: AvroSerde, fetch_wait_ms: int = 20) -> None:
        self._bootstrap = bootstrap
        self._serde = serde
        self._fetch_wait_ms = fetch_wait_ms
        self._cancelled: OrderedDict[UUID, None] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cancellation-watch", daemon=True)

    def start(self) -> CancellationWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def is_cancelled(self, task_id: UUID) -> bool:
        with self._lock:
            return task_id in self._cancelled

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": f"taskstream.cancellations.{uuid.uuid4()}",  # never joins: assign()
                "enable.auto.commit": False,
                "fetch.wait.max.ms": self._fetch_wait_ms,
            }
        )
        name = TASK_EVENTS.name
        try:
            partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
            consumer.assign([TopicPartition(name, p, OFFSET_END) for p in partitions])
            self.ready.set()
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=500, timeout=0.2):
                    if msg.error() is None:
                        self._apply(msg.value())
        except KafkaException as exc:
            logger.error("cancellation watch stopped: %s", exc)
        finally:
            consumer.close()

    def _apply(self, value: bytes | None) -> None:
        try:
            event = self._serde.deserialize(value)
        except SerializationError:
            return  # not ours to judge: the task processor dead-letters what it cannot read
        if isinstance(event, TaskStatusEvent) and event.status == TaskStatus.CANCELLED:
            with self._lock:
                self._cancelled[event.task_id] = None
                while len(self._cancelled) > REMEMBERED:
                    self._cancelled.popitem(last=False)
