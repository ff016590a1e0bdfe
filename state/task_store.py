"""Task state rows, command outcomes, the outbox and partition fencing (Postgres).

Used by the task processor: per batch one write (`apply_batch`), and a read (`load`) of the
tasks it has not seen yet; all SQL is composed from fixed identifiers with `psycopg.sql`,
values always passed as parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from processors.task_counts import PendingCounts
from processors.task_machine import TaskState
from state.db import Database
from streams.records import CommandOutcome, ErrorCategory, TaskStatus
from taskstream import jsonio

COLUMNS: tuple[str, ...] = tuple(f for f in TaskState.__dataclass_fields__ if f != "task_id")
_COLS = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
#: The columns readers of a task need (the API's public views), in this order.
READ_COLUMNS: tuple[str, ...] = (
    "id", "task_type", "status", "tenant", "priority", "provider_type", "fallback_provider_type",
    "retry_count", "progress", "created_at", "updated_at", "started_at", "completed_at",
    "error_message", "error_category", "is_deleted", "deleted_at", "origin_instance",
    "origin_zone", "fields",
)  # fmt: skip
#: A notification carries the command's task as JSON only up to this size (Postgres caps a
#: payload at 8000 bytes); a bigger task is read by the waiter instead.
NOTIFY_ROW_BYTES = 7000

_SELECT = sql.SQL("SELECT id, {cols} FROM tasks WHERE id = ANY(%b)").format(cols=_COLS).as_string()

# A batch's whole write is one statement, so one round trip and its own transaction.
# `owners` locks the batch's partition ownership rows first (every write below waits on
# `go`, which reads it), so a new owner cannot claim a partition until the batch commits; if
# any partition belongs to another epoch now, nothing is written and the fenced partitions
# come back. Likewise when a task the batch took for new (`absent`: a create of an id its
# member had not seen, decided without a read) exists after all: nothing is written and
# those ids come back, to be read and decided again. Task rows travel as one JSON array that
# Postgres turns into typed records (jsonb_populate_recordset) instead of a parameter per
# column per row. A stored verdict wakes the API waiters (pg_notify, delivered on commit)
# with `<command_id> <outcome>` and, when the batch saved the task, ` <the task's
# READ_COLUMNS as JSON>`, so a waiter answers without reading the row back; a replayed
# verdict is neither stored nor sent again. Outbox ids come from a sequence drawn in
# insertion order, which ORDER BY n fixes. The arrays go in binary (`%(...)b`): psycopg's
# text form escapes every element in Python, which cost ~0.6 ms a batch (bytea values most
# of it, hex-escaped and then quoted) against ~0.1 ms in binary.
#
# A statement holds only the parts its batch has rows for (`_statement`): each part costs
# Postgres ~0.1-0.15 ms even with nothing to write, and most batches (worker reports only)
# need neither `present` nor the verdicts, deletions or flushed counts.
_GATE = """
WITH owners AS (
    SELECT partition, epoch FROM partition_owners
    WHERE group_id = %(group)s AND partition = ANY(%(partitions)b::int[])
    FOR UPDATE
), fenced AS (
    SELECT coalesce(array_agg(u.p ORDER BY u.p), '{}') AS partitions
    FROM unnest(%(partitions)b::int[], %(epochs)b::bigint[]) AS u(p, e)
    WHERE NOT EXISTS (SELECT 1 FROM owners o WHERE o.partition = u.p AND o.epoch = u.e)
)"""
_GO_UNFENCED_AND_ABSENT = """, present AS (
    SELECT coalesce(array_agg(id ORDER BY id), '{}') AS ids
    FROM tasks WHERE id = ANY(%(absent)b::uuid[])
), go AS (
    SELECT cardinality(f.partitions) = 0 AND cardinality(p.ids) = 0 AS ok FROM fenced f, present p
)"""
_GO_UNFENCED = """, go AS (
    SELECT cardinality(partitions) = 0 AS ok FROM fenced
)"""
# Keyed by the `BatchWrite` field each part writes (`apply_batch` picks them by those names).
_PARTS: dict[str, str] = {
    "published": """, cleared AS (
    DELETE FROM outbox WHERE id = ANY(%(published)b::bigint[]) AND (SELECT ok FROM go)
)""",
    "saved": (
        sql.SQL(
            """, saved AS (
    INSERT INTO tasks (id, {cols})
    SELECT id, {cols} FROM jsonb_populate_recordset(NULL::tasks, %(tasks)s::jsonb)
    WHERE (SELECT ok FROM go)
    ON CONFLICT (id) DO UPDATE SET {sets}
    RETURNING {read_cols}
)"""
        )
        .format(
            cols=_COLS,
            read_cols=sql.SQL(", ").join(map(sql.Identifier, READ_COLUMNS)),
            sets=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in COLUMNS
            ),
        )
        .as_string()
    ),
    "deleted": """, removed AS (
    DELETE FROM tasks WHERE id = ANY(%(deleted)b::uuid[]) AND (SELECT ok FROM go)
)""",
    # needs `saved`, which `_statement` then includes too
    "outcomes": """, stored AS (
    INSERT INTO command_outcomes
        (command_id, task_id, command_type, outcome, reason, status_code, version)
    SELECT * FROM unnest(%(command_ids)b::uuid[], %(task_ids)b::uuid[], %(command_types)b::text[],
        %(outcomes)b::text[], %(reasons)b::text[], %(status_codes)b::int[], %(versions)b::bigint[])
    WHERE (SELECT ok FROM go)
    ON CONFLICT (command_id) DO NOTHING
    RETURNING command_id, task_id, outcome
), notified AS (
    SELECT count(pg_notify(
        'command_outcomes', s.command_id::text || ' ' || s.outcome || coalesce(' ' || r.row, '')
    )) AS n
    FROM stored s
    LEFT JOIN LATERAL (
        SELECT j AS row FROM (SELECT to_json(t)::text AS j FROM saved t WHERE t.id = s.task_id) x
        WHERE octet_length(j) <= %(notify_row_bytes)s
    ) r ON true
)""",
    "offsets": """, consumed AS (
    INSERT INTO consumed_offsets (group_id, topic, partition, next_offset)
    SELECT %(group)s, t, p, o + 1
    FROM unnest(%(offset_topics)b::text[], %(offset_partitions)b::int[], %(offsets)b::bigint[])
        AS u(t, p, o)
    WHERE (SELECT ok FROM go)
    ON CONFLICT (group_id, topic, partition) DO UPDATE
    SET next_offset = EXCLUDED.next_offset, updated_at = now()
    WHERE consumed_offsets.next_offset < EXCLUDED.next_offset
)""",
    "pending": """, pended AS (
    INSERT INTO pending_counts (group_id, partition, deltas, source_offsets)
    SELECT %(group)s, c.partition, c.deltas, c.source_offsets
    FROM jsonb_to_recordset(%(pending)s::jsonb)
        AS c(partition int, deltas jsonb, source_offsets jsonb)
    WHERE (SELECT ok FROM go)
    ON CONFLICT (group_id, partition) DO UPDATE
    SET deltas = EXCLUDED.deltas, source_offsets = EXCLUDED.source_offsets
)""",
    "flushed": """, unpended AS (
    DELETE FROM pending_counts
    WHERE group_id = %(group)s AND partition = ANY(%(flushed)b::int[]) AND (SELECT ok FROM go)
)""",
    "outbox": """, queued AS (
    INSERT INTO outbox (partition, topic, key, value)
    SELECT p, t, k, v
    FROM unnest(%(outbox_partitions)b::int[], %(outbox_topics)b::text[], %(outbox_keys)b::text[],
        %(outbox_values)b::bytea[]) WITH ORDINALITY AS u(p, t, k, v, n)
    WHERE (SELECT ok FROM go)
    ORDER BY n
    RETURNING id
)""",
}


@functools.lru_cache(maxsize=128)  # a handful of shapes recur
def _statement(parts: frozenset[str]) -> str:
    """The batch write with the parts named in `parts` (keys of `_PARTS`, and `absent` for
    the check that the tasks it took for new do not exist), in a fixed order."""
    if "outcomes" in parts:
        parts |= {"saved"}
    present = "absent" in parts
    return "".join(
        [
            _GATE,
            _GO_UNFENCED_AND_ABSENT if present else _GO_UNFENCED,
            *(cte for name, cte in _PARTS.items() if name in parts),
            "\nSELECT (SELECT partitions FROM fenced), ",
            "(SELECT ids FROM present), " if present else "'{}'::uuid[], ",
            "(SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM queued)"
            if "outbox" in parts
            else "'{}'::bigint[]",
            # a plain SELECT runs only when read: this is what sends the notifications
            ", (SELECT n FROM notified)" if "outcomes" in parts else "",
            "\n",
        ]
    )


def load(db: Database, task_ids: Iterable[UUID]) -> dict[UUID, TaskState]:
    """The tasks' current states (a plain read: the batch write checks the partitions are
    still this member's, and only a partition's owner writes its tasks)."""
    rows = db.execute(_SELECT, (list(task_ids),))
    return {row[0]: _state(row) for row in rows}


def all_states(conn: psycopg.Connection) -> Iterator[TaskState]:
    """Every task's state, streamed from a server-side cursor (inside a transaction)."""
    with conn.cursor(name="all_task_states") as cursor:
        cursor.execute(sql.SQL("SELECT id, {cols} FROM tasks").format(cols=_COLS))
        for row in cursor:
            yield _state(row)


def _state(row: Sequence[Any]) -> TaskState:
    values = dict(zip(COLUMNS, row[1:], strict=True))
    values["status"] = TaskStatus(values["status"])
    if values["error_category"] is not None:
        values["error_category"] = ErrorCategory(values["error_category"])
    return TaskState(task_id=row[0], **values)


@dataclass
class BatchWrite:
    """Everything one batch of the task processor writes, in one transaction."""

    group: str
    epochs: dict[int, int]  # partition -> the epoch this member holds it at
    published: Sequence[int] = ()  # outbox ids acknowledged since the last batch: deleted
    absent: Sequence[UUID] = ()  # tasks decided as new without a read: none may exist
    saved: Sequence[TaskState] = ()
    deleted: Sequence[UUID] = ()
    outcomes: Sequence[CommandOutcome] = ()
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # last applied
    outbox: Sequence[tuple[int, str, str, bytes]] = ()  # (partition, topic, key, value)
    pending: dict[int, PendingCounts] = field(default_factory=dict)  # partition -> its sum now
    flushed: Sequence[int] = ()  # partitions whose pending counts went into `outbox`


@dataclass(frozen=True)
class BatchWritten:
    fenced: list[int]  # partitions another epoch owns: nothing was written
    present: list[UUID]  # tasks of `absent` that exist: nothing was written
    outbox_ids: list[int]  # in the order of `BatchWrite.outbox`


def apply_batch(db: Database, batch: BatchWrite) -> BatchWritten:
    outcomes = [
        (
            o.command_id,
            o.task_id,
            o.command_type,
            o.outcome.value,
            o.reason,
            o.status_code,
            o.version,
        )
        for o in batch.outcomes
    ]
    offsets = [(topic, partition, offset) for (topic, partition), offset in batch.offsets.items()]
    params = {
        "group": batch.group,
        "notify_row_bytes": NOTIFY_ROW_BYTES,
        "partitions": list(batch.epochs),
        "epochs": list(batch.epochs.values()),
        "published": list(batch.published),
        "absent": list(batch.absent),
        "tasks": jsonio.dumps([{**vars(state), "id": state.task_id} for state in batch.saved]),
        "deleted": list(batch.deleted),
        "pending": jsonio.dumps(
            [
                {"partition": p, "deltas": c.deltas, "source_offsets": c.source_offsets}
                for p, c in batch.pending.items()
            ]
        ),
        "flushed": list(batch.flushed),
        **_columns(
            (
                "command_ids",
                "task_ids",
                "command_types",
                "outcomes",
                "reasons",
                "status_codes",
                "versions",
            ),
            outcomes,
        ),
        **_columns(("offset_topics", "offset_partitions", "offsets"), offsets),
        **_columns(
            ("outbox_partitions", "outbox_topics", "outbox_keys", "outbox_values"), batch.outbox
        ),
    }
    parts = frozenset(name for name in ("absent", *_PARTS) if getattr(batch, name))
    ((fenced, present, ids, *_),) = db.execute(_statement(parts), params)
    return BatchWritten(fenced=list(fenced), present=list(present), outbox_ids=list(ids))


def _columns(names: Sequence[str], rows: Sequence[Sequence]) -> dict[str, list]:
    """Rows as one list per column (what `unnest` takes), keyed by parameter name."""
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


def pending_outbox(
    conn: psycopg.Connection, partition: int
) -> list[tuple[int, int, str, str, bytes]]:
    """A partition's unpublished (outbox id, partition, topic, key, value) rows, in order."""
    return conn.execute(
        "SELECT id, partition, topic, key, value FROM outbox WHERE partition = %s ORDER BY id",
        (partition,),
    ).fetchall()


def pending_counts(
    conn: psycopg.Connection, group: str, partitions: Sequence[int], since: float
) -> dict[int, PendingCounts]:
    """The partitions' counter changes not yet published (left by their previous owner)."""
    rows = conn.execute(
        "SELECT partition, deltas, source_offsets FROM pending_counts"
        " WHERE group_id = %s AND partition = ANY(%s)",
        (group, list(partitions)),
    ).fetchall()
    return {p: PendingCounts(deltas, offsets, since) for p, deltas, offsets in rows}


def claim(conn: psycopg.Connection, group: str, partition: int, owner: str) -> int:
    """Take a partition over: bump and return its epoch."""
    return conn.execute(
        "INSERT INTO partition_owners (group_id, partition, epoch, owner) VALUES (%s, %s, 1, %s)"
        " ON CONFLICT (group_id, partition) DO UPDATE"
        " SET epoch = partition_owners.epoch + 1, owner = EXCLUDED.owner RETURNING epoch",
        (group, partition, owner),
    ).fetchone()[0]
