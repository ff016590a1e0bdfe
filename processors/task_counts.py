"""Task counters for the monitoring dashboard: the pure core of the stream tables.

Counting is aggregated upstream. The task processor, the single writer of task state, knows
every task's state before and after each batch it applies: `deltas(before, after)` is the
change in what the task contributes to the counters (`contribution`). The processor adds
those up per partition (`add`) in a pending sum stored with the states, in the same
transaction, and about twice a second moves a partition's sum into its outbox as one
`TaskCountsDelta` with the largest source offsets of the batches in it. The stream tables
apply the deltas (`apply`) and skip a redelivered one by those offsets, so every batch is
counted exactly once however often its record is published or read.

Counters are keyed `<scope>|<dimension>|<value>`:

    scopes      *  (all tasks), i:<origin_instance>, z:<origin_zone>, iz:<instance>/<zone>
    dimensions  total, status, task_type, provider, created_minute (epoch minutes)

The tables hold them under keys `<partition>|<group>` (`table_keys`): group `all` for the
totals by status, task type and provider of every scope, `h<epoch hour>` for that hour's
created_minute buckets, so a delta writes two small values (the table's changelog costs a
produce request per write) and old hours can be dropped whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from processors.task_machine import TaskState

NO_PROVIDER = "local"
WINDOW_MINUTES = 24 * 60  # created_minute buckets older than this are dropped


def minute(at: datetime) -> int:
    return int(at.timestamp() // 60)


def scopes(instance: str | None, zone: str | None) -> list[str]:
    """Every scope a task with this origin is counted in."""
    found = ["*"]
    if instance:
        found.append(f"i:{instance}")
    if zone:
        found.append(f"z:{zone}")
    if instance and zone:
        found.append(f"iz:{instance}/{zone}")
    return found


def scope_of(instance: str | None, zone: str | None) -> str:
    """The counter scope answering a filter on instance and/or zone."""
    return scopes(instance, zone)[-1]


def contribution(state: TaskState | None) -> Counter[str]:
    """What one task adds to the counters (nothing once it is deleted for good; a cleaned-up
    task still counts, as its record is kept)."""
    counts: Counter[str] = Counter()
    if state is None:
        return counts
    provider = state.provider_type or NO_PROVIDER
    created = minute(state.created_at)
    for scope in scopes(state.origin_instance, state.origin_zone):
        counts[f"{scope}|total|"] += 1
        counts[f"{scope}|status|{state.status.value}"] += 1
        counts[f"{scope}|task_type|{state.task_type}"] += 1
        counts[f"{scope}|provider|{provider}"] += 1
        counts[f"{scope}|created_minute|{created}"] += 1
    return counts


def deltas(before: TaskState | None, after: TaskState | None) -> dict[str, int]:
    """The counter changes of a task going from `before` to `after` (None: not there)."""
    if before is not None and after is not None and _counted_as(before) == _counted_as(after):
        # the common case, a status change (or none): only the status counters move
        if before.status is after.status:
            return {}
        moved: dict[str, int] = {}
        for scope in scopes(after.origin_instance, after.origin_zone):
            moved[f"{scope}|status|{before.status.value}"] = -1
            moved[f"{scope}|status|{after.status.value}"] = 1
        return moved
    change = contribution(after)
    change.subtract(contribution(before))
    return {k: v for k, v in change.items() if v}


def _counted_as(state: TaskState) -> tuple:
    """What `contribution` reads of a task, besides its status."""
    return (
        state.origin_instance,
        state.origin_zone,
        state.provider_type,
        state.task_type,
        minute(state.created_at),
    )


@dataclass(frozen=True)
class PendingCounts:
    """A partition's counter changes not yet published: the sum of several batches' deltas,
    with the largest source offset of each topic among them."""

    deltas: dict[str, int]
    source_offsets: dict[str, int]
    since: float  # monotonic time of the oldest change in it


def add(
    pending: PendingCounts | None,
    changes: Mapping[str, int],
    source_offsets: Mapping[str, int],
    now: float,
) -> PendingCounts:
    """`pending` with one more batch's changes. Published as one delta, the sum is applied
    exactly once like a single batch's: its offsets are newer than every earlier delta's,
    because the newest batch in it consumed a newer offset of some topic than all before."""
    deltas = Counter(pending.deltas) if pending else Counter()
    deltas.update(changes)
    offsets = _newest(pending.source_offsets if pending else {}, source_offsets)
    since = pending.since if pending else now
    return PendingCounts({k: v for k, v in deltas.items() if v}, offsets, since)


def _newest(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """The larger offset of each topic in either."""
    newest = dict(a)
    for topic, offset in b.items():
        newest[topic] = max(offset, newest.get(topic, -1))
    return newest


def table_key(partition: int, counter: str) -> str:
    _, dimension, value = counter.split("|", 2)
    group = f"h{int(value) // 60}" if dimension == "created_minute" else "all"
    return f"{partition}|{group}"


def table_keys(partition: int, changes: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """A partition's counter changes grouped by the table key that holds them."""
    grouped: dict[str, dict[str, int]] = {}
    for counter, delta in changes.items():
        grouped.setdefault(table_key(partition, counter), {})[counter] = delta
    return grouped


def apply(
    stored: Mapping | None, source_offsets: Mapping[str, int], changes: Mapping[str, int]
) -> dict | None:
    """One table value after a delta; None when the value already holds it.

    A value is `{"offsets": {topic: offset}, "counts": {counter: n}}`, its offsets the largest
    source offsets applied to it. Each batch of the task processor consumes newer offsets of at
    least one of its topics than every batch before, so a delta is new exactly when one of
    its offsets exceeds the stored one; a redelivery exceeds none.
    """
    offsets = dict(stored["offsets"]) if stored else {}
    if stored and all(offset <= offsets.get(t, -1) for t, offset in source_offsets.items()):
        return None
    counts = Counter(stored["counts"]) if stored else Counter()
    counts.update(changes)
    return {
        "offsets": _newest(offsets, source_offsets),
        "counts": {k: v for k, v in counts.items() if v},
    }


def partition_of(key: str) -> int:
    return int(key.split("|", 1)[0])


def expired(key: str, now: datetime) -> bool:
    """Whether a table key holds only created_minute buckets older than the window."""
    group = key.rsplit("|", 1)[1]
    return group.startswith("h") and (int(group[1:]) + 1) * 60 <= minute(now) - WINDOW_MINUTES


def aggregate(snapshots: list[Mapping[str, int]], scope: str, now: datetime) -> dict:
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
