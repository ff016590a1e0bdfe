"""The task processor's own view of the states it wrote: bounded, and forgotten with a
partition."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from processors.task_machine import TaskState
from processors.task_processor import KnownStates
from streams.records import TaskStatus

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def state() -> TaskState:
    return TaskState(uuid.uuid4(), "GENERATION", TaskStatus.PENDING, 1, NOW, NOW)


def test_the_least_recently_written_go_first_past_the_limit():
    known = KnownStates(limit=2)
    a, b, c = state(), state(), state()
    known.update({a.task_id: (0, a), b.task_id: (0, b)})
    known.update({a.task_id: (0, a)})  # written again: now the newest
    known.update({c.task_id: (1, c)})
    assert b.task_id not in known and len(known) == 2
    assert known.get(a.task_id) is a and known.get(c.task_id) is c


def test_a_deleted_task_and_a_lost_partition_are_forgotten():
    known = KnownStates()
    a, b, c = state(), state(), state()
    known.update({a.task_id: (0, a), b.task_id: (1, b), c.task_id: (2, c)})
    known.update({a.task_id: (0, None)})
    known.forget([1])
    assert a.task_id not in known and b.task_id not in known
    assert known.get(c.task_id) is c
