"""Which jobs to stop, as seen on `tasks.cancellations`: lets a worker stop a running job, or
skip a queued one.

The task processor publishes a `JobCancelled` there whenever a command ends an active
attempt (a cancel, a delete or cleanup of a running task, an update that finishes or
requeues it). It names the job, not the task: a task cancelled and then retried runs its
new attempt. The watch follows every partition from the end (only what happens from now on)
and remembers the most recent job ids (bounded). The task processor drops any report of an
attempt that has ended, so a cancellation this reader misses costs work, never correctness.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from uuid import UUID

from confluent_kafka import OFFSET_END

from streams.latest import TopicReader
from streams.records import JobCancelled, Record
from streams.serde import AvroSerde
from streams.topics import TASK_CANCELLATIONS

REMEMBERED = 10_000


class CancellationWatch(TopicReader):
    def __init__(self, bootstrap: str, serde: AvroSerde, fetch_wait_ms: int = 200) -> None:
        super().__init__(
            bootstrap, TASK_CANCELLATIONS, serde, OFFSET_END, fetch_wait_ms, JobCancelled
        )
        self._cancelled: OrderedDict[UUID, None] = OrderedDict()
        self._lock = threading.Lock()

    def is_cancelled(self, job_id: UUID) -> bool:
        with self._lock:
            return job_id in self._cancelled

    def on_record(self, key: bytes | None, record: Record | None) -> None:
        if isinstance(record, JobCancelled):
            with self._lock:
                self._cancelled[record.job_id] = None
                while len(self._cancelled) > REMEMBERED:
                    self._cancelled.popitem(last=False)
