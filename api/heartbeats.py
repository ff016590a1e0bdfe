"""Who is alive and ready, from `workers.heartbeats` (feeds /health, later /monitoring/workers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streams.latest import LatestRecords
from streams.records import WorkerHeartbeat, WorkerRole
from streams.serde import AvroSerde
from streams.topics import WORKER_HEARTBEATS


class HeartbeatMonitor:
    def __init__(
        self, bootstrap: str, serde: AvroSerde, max_age_s: float, fetch_wait_ms: int = 20
    ) -> None:
        self._max_age = timedelta(seconds=max_age_s)
        self._latest = LatestRecords(
            bootstrap, WORKER_HEARTBEATS, serde, WorkerHeartbeat, fetch_wait_ms
        )

    def start(self) -> HeartbeatMonitor:
        self._latest.start()
        return self

    def stop(self) -> None:
        self._latest.stop()

    def ready(self, role: WorkerRole, now: datetime | None = None) -> list[WorkerHeartbeat]:
        """Members of `role` whose latest heartbeat is recent and says ready."""
        now = now or datetime.now(UTC)
        return [
            hb
            for hb in self._latest.values()
            if hb.role == role and hb.ready and now - hb.timestamp <= self._max_age
        ]
