"""The stream tables' counting core: exact, and idempotent under redelivery."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from processors.task_counts import aggregate, count
from streams.records import EventType, TaskCreatedEvent, TaskDeleted, TaskStatus, TaskStatusEvent

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def created(task_id, at=NOW, provider="echo", instance="prod", zone="eu", task_type="GENERATION"):
    return TaskCreatedEvent(
        event_type=EventType.TASK_CREATED,
        task_id=task_id,
        status="PENDING",
        task_type=task_type,
        created_at=at,
        total_steps=1,
        origin_instance=instance,
        origin_zone=zone,
        metadata={"provider_type": provider} if provider else None,
    )


def status(task_id, value: TaskStatus):
    return TaskStatusEvent(
        event_type=EventType.TASK_STATUS,
        task_id=task_id,
        status=value,
        task_type="GENERATION",
        progress=0.0,
    )


def run(events):
    facts, counts = {}, Counter()
    for event in events:
        new, deltas = count(facts.get(event.task_id), event)
        facts[event.task_id] = new
        counts.update(deltas)
    return counts


def test_counts_follow_the_lifecycle_in_every_scope():
    a, b = uuid.uuid4(), uuid.uuid4()
    counts = run(
        [
            created(a),
            created(b, provider=None, zone=None, task_type="REFINE"),
            status(a, TaskStatus.EXECUTING),
            status(a, TaskStatus.COMPLETED),
            status(b, TaskStatus.CANCELLED),
        ]
    )
    stats = aggregate([counts], "*", NOW + timedelta(minutes=5))
    assert stats == {
        "total_tasks": 2,
        "by_status": {"COMPLETED": 1, "CANCELLED": 1},
        "by_provider": {"echo": 1, "local": 1},
        "by_task_type": {"GENERATION": 1, "REFINE": 1},
        "tasks_last_hour": 2,
        "tasks_last_24h": 2,
    }
    assert aggregate([counts], "z:eu", NOW)["total_tasks"] == 1
    assert aggregate([counts], "i:prod", NOW)["by_status"] == {"COMPLETED": 1, "CANCELLED": 1}


def test_redelivered_events_change_nothing():
    a = uuid.uuid4()
    once = run([created(a), status(a, TaskStatus.EXECUTING), status(a, TaskStatus.COMPLETED)])
    twice = run(
        [
            created(a),
            created(a),
            status(a, TaskStatus.EXECUTING),
            status(a, TaskStatus.EXECUTING),
            status(a, TaskStatus.COMPLETED),
            status(a, TaskStatus.COMPLETED),
        ]
    )
    assert +once == +twice


def test_hard_delete_removes_a_task_and_windows_age_out():
    a, old = uuid.uuid4(), uuid.uuid4()
    gone = TaskDeleted(task_id=a, command_id=uuid.uuid4(), version=2, hard=True, timestamp=NOW)
    counts = run([created(a), created(old, at=NOW - timedelta(hours=3)), gone])
    stats = aggregate([counts], "*", NOW)
    assert stats["total_tasks"] == 1 and stats["by_status"] == {"PENDING": 1}
    assert (stats["tasks_last_hour"], stats["tasks_last_24h"]) == (0, 1)
    assert aggregate([counts], "*", NOW + timedelta(days=2))["tasks_last_24h"] == 0


def test_partitions_are_summed():
    a, b = uuid.uuid4(), uuid.uuid4()
    assert aggregate([run([created(a)]), run([created(b)])], "*", NOW)["total_tasks"] == 2


def test_counters_rebuilt_from_facts_equal_the_incremental_ones():
    """After a crash the counters are recomputed from the facts table alone."""
    from processors.task_counts import created_event

    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    events = [
        created(a),
        created(b, zone=None),
        created(c, at=NOW - timedelta(hours=2)),
        status(a, TaskStatus.EXECUTING),
        status(a, TaskStatus.FAILED),
        status(b, TaskStatus.CANCELLED),
    ]
    facts, incremental = {}, Counter()
    for event in events:
        new, deltas = count(facts.get(event.task_id), event)
        facts[event.task_id] = new
        incremental.update(deltas)
    rebuilt = Counter()
    for f in facts.values():
        rebuilt.update(count(None, created_event(f))[1])
    assert +rebuilt == +incremental
