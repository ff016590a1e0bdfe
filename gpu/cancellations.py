"""Which tasks were cancelled, as seen on `tasks.cancellations`: lets a worker stop a running
job.

The task processor publishes every CANCELLED `TaskStatusEvent` there as well as on
`tasks.events`, so a worker reads a record per cancellation instead of sifting every task
event. The watch follows every partition from the end (only what happens from now on) and
remembers the most recent cancelled task ids (bounded). The task processor drops any report
that arrives after CANCELLED, so a cancellation this reader misses costs work, never
correctness.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from uuid import UUID

from confluent_kafka import OFFSET_END

from streams.latest import TopicReader
from streams.records import Record, TaskStatus, TaskStatusEvent
from streams.serde import AvroSerde
from streams.topics import TASK_CANCELLATIONS

REMEMBERED = 10_000


class CancellationWatch(TopicReader):
    def __init__(self, bootstrap: str, serde: AvroSerde, fetch_wait_ms: int = 200) -> None:
        super().__init__(
            bootstrap, TASK_CANCELLATIONS, serde, OFFSET_END, fetch_wait_ms, TaskStatusEvent
        )
        self._cancelled: OrderedDict[UUID, None] = OrderedDict()
        self._lock = threading.Lock()

    def is_cancelled(self, task_id: UUID) -> bool:
        with self._lock:
            return task_id in self._cancelled

    def wanted(self, name: str, fields: dict) -> bool:
        return fields.get("status") == TaskStatus.CANCELLED.value

    def on_record(self, key: bytes | None, record: Record | None) -> None:
        if isinstance(record, TaskStatusEvent) and record.status == TaskStatus.CANCELLED:
            with self._lock:
                self._cancelled[record.task_id] = None
                while len(self._cancelled) > REMEMBERED:
                    self._cancelled.popitem(last=False)
