"""Task counters for the monitoring dashboard: the pure core of the stream tables.

`count(facts, event)` turns one event from `tasks.events` into counter deltas, given what is
known of the task so far (`TaskFacts`, None for a task not seen yet). It is idempotent under
at-least-once delivery: a repeated TaskCreatedEvent, or a status the task already has, adds
nothing. Counters are keyed `<scope>|<dimension>|<value>`:

    scopes      *  (all tasks), i:<origin_instance>, z:<origin_zone>, iz:<instance>/<zone>
    dimensions  total, status, task_type, provider, created_minute (epoch minutes)
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from streams.records import EventType, Record, TaskCreatedEvent, TaskDeleted, TaskStatusEvent

NO_PROVIDER = "local"
WINDOW_MINUTES = 24 * 60  # created_minute buckets older than this are dropped


@dataclass(frozen=True)
class TaskFacts:
    status: str
    task_type: str
    provider: str
    instance: str | None
    zone: str | None
    created_minute: int

    def scopes(self) -> list[str]:
        scopes = ["*"]
        if self.instance:
            scopes.append(f"i:{self.instance}")
        if self.zone:
            scopes.append(f"z:{self.zone}")
        if self.instance and self.zone:
            scopes.append(f"iz:{self.instance}/{self.zone}")
        return scopes


def scope_of(instance: str | None, zone: str | None) -> str:
    """The counter scope answering a filter on instance and/or zone."""
    if instance and zone:
        return f"iz:{instance}/{zone}"
    if instance:
        return f"i:{instance}"
    if zone:
        return f"z:{zone}"
    return "*"


def minute(at: datetime) -> int:
    return int(at.timestamp() // 60)


def count(facts: TaskFacts | None, event: Record) -> tuple[TaskFacts | None, Counter[str]]:
    """(facts after the event, counter deltas)."""
    deltas: Counter[str] = Counter()
    if isinstance(event, TaskCreatedEvent):
        if facts is not None:
            return facts, deltas
        metadata = event.metadata or {}
        new = TaskFacts(
            status=event.status,
            task_type=event.task_type,
            provider=metadata.get("provider_type") or NO_PROVIDER,
            instance=event.origin_instance,
            zone=event.origin_zone,
            created_minute=minute(event.created_at),
        )
        _add(deltas, new, +1)
        return new, deltas
    if facts is None:
        return None, deltas
    if isinstance(event, TaskStatusEvent) and event.status.value != facts.status:
        for scope in facts.scopes():
            deltas[f"{scope}|status|{facts.status}"] -= 1
            deltas[f"{scope}|status|{event.status.value}"] += 1
        return replace(facts, status=event.status.value), deltas
    if isinstance(event, TaskDeleted) and event.hard:
        _add(deltas, facts, -1)
        return None, deltas
    return facts, deltas


def created_event(facts: TaskFacts) -> TaskCreatedEvent:
    """A TaskCreatedEvent standing for what `facts` record, to rebuild counters from facts."""
    return TaskCreatedEvent(
        event_type=EventType.TASK_CREATED,
        task_id=uuid.UUID(int=0),
        status=facts.status,
        task_type=facts.task_type,
        created_at=datetime.fromtimestamp(facts.created_minute * 60, UTC),
        total_steps=1,
        origin_instance=facts.instance,
        origin_zone=facts.zone,
        metadata={"provider_type": facts.provider},
    )


def _add(deltas: Counter[str], facts: TaskFacts, sign: int) -> None:
    for scope in facts.scopes():
        deltas[f"{scope}|total|"] += sign
        deltas[f"{scope}|status|{facts.status}"] += sign
        deltas[f"{scope}|task_type|{facts.task_type}"] += sign
        deltas[f"{scope}|provider|{facts.provider}"] += sign
        deltas[f"{scope}|created_minute|{facts.created_minute}"] += sign


def aggregate(snapshots: list[dict[str, int]], scope: str, now: datetime) -> dict:
    """Sum partition snapshots into the seed's AggregateStats shape for one scope."""
    total: Counter[str] = Counter()
    for counts in snapshots:
        total.update(counts)
    prefix = f"{scope}|"
    stats: dict = {
        "total_tasks": 0,
        "by_status": {},
        "by_provider": {},
        "by_task_type": {},
        "tasks_last_hour": 0,
        "tasks_last_24h": 0,
    }
    names = {"status": "by_status", "provider": "by_provider", "task_type": "by_task_type"}
    current = minute(now)
    for key, value in total.items():
        if not key.startswith(prefix) or value == 0:
            continue
        _, dimension, label = key.split("|", 2)
        if dimension == "total":
            stats["total_tasks"] = value
        elif dimension in names:
            stats[names[dimension]][label] = value
        elif dimension == "created_minute":
            age = current - int(label)
            if age < 60:
                stats["tasks_last_hour"] += value
            if age < WINDOW_MINUTES:
                stats["tasks_last_24h"] += value
    return stats
