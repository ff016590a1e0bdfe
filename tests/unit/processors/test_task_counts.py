"""The stream tables' counting core: exact, and idempotent under redelivery."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from processors.task_counts import (
    add,
    aggregate,
    apply,
    contribution,
    deltas,
    expired,
    table_keys,
)
from processors.task_machine import TaskState
from streams.records import TaskStatus

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def task(at=NOW, provider="echo", instance="prod", zone="eu", task_type="GENERATION"):
    return TaskState(
        task_id=uuid.uuid4(),
        task_type=task_type,
        status=TaskStatus.PENDING,
        version=1,
        created_at=at,
        updated_at=at,
        provider_type=provider,
        origin_instance=instance,
        origin_zone=zone,
    )


def moved(*transitions: tuple[TaskState | None, TaskState | None]) -> Counter[str]:
    """The counters after a series of (before, after) state changes."""
    counts: Counter[str] = Counter()
    for before, after in transitions:
        counts.update(deltas(before, after))
    return +counts


def test_counts_follow_the_lifecycle_in_every_scope():
    a = task()
    b = task(provider=None, zone=None, task_type="REFINE")
    a_running = replace(a, status=TaskStatus.EXECUTING, progress=10.0)
    a_done = replace(a_running, status=TaskStatus.COMPLETED, progress=100.0)
    counts = moved(
        (None, a),
        (None, b),
        (a, a_running),
        (a_running, a_done),
        (b, replace(b, status=TaskStatus.CANCELLED)),
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
    assert aggregate([counts], "iz:prod/eu", NOW)["by_task_type"] == {"GENERATION": 1}


def test_every_change_moves_the_counters_by_the_difference_of_contributions():
    a = task()
    changed = [
        replace(a, status=status, progress=p) for status in TaskStatus for p in (0.0, 50.0)
    ] + [
        replace(a, provider_type=None),
        replace(a, origin_zone=None, status=TaskStatus.EXECUTING),
        replace(a, origin_instance="other"),
        replace(a, task_type="REFINE", status=TaskStatus.FAILED),
        replace(a, created_at=NOW + timedelta(minutes=2)),
        replace(a, created_at=NOW + timedelta(seconds=30), status=TaskStatus.COMPLETED),
    ]
    for before in [a, *changed]:
        for after in [a, *changed]:
            expected = contribution(after)
            expected.subtract(contribution(before))
            assert deltas(before, after) == {k: v for k, v in expected.items() if v}


def test_changes_that_do_not_move_a_counter_make_no_delta():
    a = task()
    assert deltas(a, replace(a, progress=50.0, version=2, fields={"x": 1})) == {}
    assert deltas(a, replace(a, is_deleted=True, deleted_at=NOW)) == {}  # cleanup keeps the task


def test_a_provider_change_moves_the_task_between_providers():
    a = task(provider="echo")
    counts = moved((None, a), (a, replace(a, provider_type="local")))
    assert aggregate([counts], "*", NOW)["by_provider"] == {"local": 1}


def test_hard_delete_removes_a_task_and_windows_age_out():
    a, old = task(), task(at=NOW - timedelta(hours=3))
    counts = moved((None, a), (None, old), (a, None))
    stats = aggregate([counts], "*", NOW)
    assert stats["total_tasks"] == 1 and stats["by_status"] == {"PENDING": 1}
    assert (stats["tasks_last_hour"], stats["tasks_last_24h"]) == (0, 1)
    assert aggregate([counts], "*", NOW + timedelta(days=2))["tasks_last_24h"] == 0


def test_partitions_are_summed():
    assert aggregate([moved((None, task())), moved((None, task()))], "*", NOW)["total_tasks"] == 2


def run(table: dict, partition: int, offsets: dict, changes: dict, only: set | None = None):
    """Apply one delta record to a dict standing for the table (optionally only some keys,
    as if the process died between the writes)."""
    for key, grouped in table_keys(partition, changes).items():
        if only is not None and key not in only:
            continue
        new = apply(table.get(key), offsets, grouped)
        if new is not None:
            table[key] = new


def snapshot(table: dict) -> Counter[str]:
    total: Counter[str] = Counter()
    for value in table.values():
        total.update(value["counts"])
    return +total


def test_a_delta_is_counted_once_however_often_it_is_read():
    first = deltas(None, task())
    second = deltas(None, task(task_type="REFINE"))
    once, again = {}, {}
    run(once, 0, {"tasks.commands": 4}, first)
    run(once, 0, {"tasks.commands": 9, "inference.status": 2}, second)
    for offsets, changes in [
        ({"tasks.commands": 4}, first),
        ({"tasks.commands": 4}, first),  # republished from the outbox
        ({"tasks.commands": 9, "inference.status": 2}, second),
        ({"tasks.commands": 4}, first),  # a stale copy after a newer delta
        ({"tasks.commands": 9, "inference.status": 2}, second),
    ]:
        run(again, 0, offsets, changes)
    assert (
        snapshot(again) == snapshot(once) == moved((None, task()), (None, task(task_type="REFINE")))
    )


def test_a_delta_from_a_batch_of_other_topics_only_is_new():
    a = task()
    table: dict = {}
    run(table, 0, {"tasks.commands": 4}, deltas(None, a))
    running = replace(a, status=TaskStatus.EXECUTING)
    run(table, 0, {"inference.status": 0}, deltas(a, running))
    assert aggregate([snapshot(table)], "*", NOW)["by_status"] == {"EXECUTING": 1}


def test_a_delta_half_applied_before_a_crash_completes_on_replay():
    changes = moved((None, task()), (None, task(at=NOW - timedelta(hours=2))))
    keys = sorted(table_keys(0, changes))
    assert len(keys) == 3  # totals and two hours of buckets
    whole, torn = {}, {}
    run(whole, 0, {"tasks.commands": 1}, changes)
    run(torn, 0, {"tasks.commands": 1}, changes, only=set(keys[: len(keys) // 2]))
    run(torn, 0, {"tasks.commands": 1}, changes)  # redelivered after the restart
    assert snapshot(torn) == snapshot(whole) == +changes


def test_hours_expire_only_past_the_window():
    keys = table_keys(3, deltas(None, task()))
    assert all(k.startswith("3|") for k in keys)
    hours = [k for k in keys if not k.endswith("|all")]
    assert hours and not any(expired(k, NOW + timedelta(hours=24)) for k in hours)
    assert all(expired(k, NOW + timedelta(hours=25)) for k in hours)
    assert not any(expired(k, NOW + timedelta(days=9)) for k in keys if k.endswith("|all"))


def test_batches_summed_before_publishing_count_exactly_like_each_batch_alone():
    a, b = task(), task(task_type="REFINE")
    running = replace(a, status=TaskStatus.EXECUTING)
    batches = [
        ({"tasks.commands": 4}, deltas(None, a)),
        ({"tasks.commands": 5, "inference.status": 0}, {**deltas(a, running)}),
        ({"tasks.commands": 6}, deltas(None, b)),
        ({"inference.status": 3}, deltas(b, None)),  # b deleted for good: cancels its creation
    ]
    one_by_one: dict = {}
    for offsets, changes in batches:
        run(one_by_one, 0, offsets, changes)
    summed = None
    for i, (offsets, changes) in enumerate(batches):
        summed = add(summed, changes, offsets, now=10.0 + i)
    assert summed.since == 10.0  # the oldest change decides when the sum is due
    assert summed.source_offsets == {"tasks.commands": 6, "inference.status": 3}
    assert all(summed.deltas.values())  # cancelled counters are gone, not zero
    table: dict = {}
    run(table, 0, summed.source_offsets, summed.deltas)
    run(table, 0, summed.source_offsets, summed.deltas)  # republished: skipped
    assert snapshot(table) == snapshot(one_by_one) == moved((None, running))
    later = add(
        None,
        deltas(running, replace(running, status=TaskStatus.COMPLETED)),
        {"inference.status": 4},
        now=11.0,
    )
    run(table, 0, later.source_offsets, later.deltas)  # the next sum is new
    assert aggregate([snapshot(table)], "*", NOW)["by_status"] == {"COMPLETED": 1}
