"""What every long-running Kafka process shares: connecting its serde to the schema
registry, running its consumer-group members on threads, heartbeating to
`workers.heartbeats` and stopping cleanly.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from streams.consumer import RecordConsumer
from streams.producer import RecordProducer
from streams.records import WorkerHeartbeat, WorkerRole
from streams.registry import HttpSchemaRegistry, RegistryError
from streams.schemas import load_catalog
from streams.serde import AvroSerde
from streams.topics import WORKER_HEARTBEATS

logger = logging.getLogger(__name__)


def connect_serde(
    registry_url: str, basic_auth: str | None, wait_s: float = 120.0
) -> tuple[AvroSerde, HttpSchemaRegistry]:
    """An `AvroSerde` with every taskstream schema registered, and its registry client (the
    caller closes it). Waits for the registry: in the embedded stack the API serves it and
    may still be starting.
    """
    registry = HttpSchemaRegistry(registry_url, basic_auth)
    serde = AvroSerde(registry, load_catalog())
    deadline = time.monotonic() + wait_s
    while True:
        try:
            serde.register_all()
            return serde, registry
        except RegistryError as exc:
            if time.monotonic() > deadline:
                registry.close()
                raise
            logger.info("schema registry not ready (%s); retrying", exc)
            time.sleep(1.0)


def default_worker_id(role: WorkerRole) -> str:
    return f"{role.value.lower()}-{socket.gethostname()}-{os.getpid()}"


@dataclass
class MemberProcess:
    """Runs consumer-group members until stopped, heartbeating every `interval_s` seconds.

    `status` adds process-specific fields to each heartbeat (active tasks, counts).
    """

    role: WorkerRole
    worker_id: str
    producer: RecordProducer
    consumers: Sequence[RecordConsumer]
    interval_s: float = 2.0
    queues: Sequence[str] = ()
    status: Callable[[], dict] = dict
    on_close: Sequence[Callable[[], None]] = ()  # resources the process owns besides the producer
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    failure: BaseException | None = None

    def run(self, stop: threading.Event) -> None:
        """Block until `stop` is set or a member fails; re-raise a member's failure."""
        threads = [
            threading.Thread(target=self._member, args=(c, stop), name=f"{c.group_id}", daemon=True)
            for c in self.consumers
        ]
        for thread in threads:
            thread.start()
        try:
            while not stop.is_set():
                self.beat(ready=all(c.joined.is_set() for c in self.consumers))
                stop.wait(self.interval_s)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            self.beat(ready=False)  # health flips at once instead of after a timeout
            self.producer.close()
            for close in self.on_close:
                close()
        if self.failure is not None:
            raise self.failure

    def _member(self, consumer: RecordConsumer, stop: threading.Event) -> None:
        try:
            consumer.run(stop)
        except BaseException as exc:
            logger.exception("consumer %s failed; stopping the process", consumer.group_id)
            self.failure = exc
            stop.set()

    def beat(self, ready: bool) -> None:
        extra = self.status()
        assigned = sorted({p for c in self.consumers for p in c.assignment})
        record = WorkerHeartbeat(
            worker_id=self.worker_id,
            role=self.role,
            group_id=",".join(c.group_id for c in self.consumers) or None,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            ready=ready,
            queues=list(self.queues),
            assigned_partitions=assigned,
            started_at=self.started_at,
            timestamp=datetime.now(UTC),
            **extra,
        )
        self.producer.send(WORKER_HEARTBEATS, self.worker_id, record)
