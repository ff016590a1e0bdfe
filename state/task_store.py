"""Task state rows, command outcomes, the outbox and partition fencing (Postgres).

Used by the task processor inside its per-batch transaction; all SQL is composed from fixed
identifiers with `psycopg.sql`, values always passed as parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from processors.task_machine import TaskState
from streams.records import CommandOutcome, ErrorCategory, TaskStatus

COLUMNS: tuple[str, ...] = tuple(f for f in TaskState.__dataclass_fields__ if f != "task_id")
# One statement per batch: the rows travel as one JSON array that Postgres turns into typed
# records (jsonb_populate_recordset), instead of one parameter per column per row.
_UPSERT = sql.SQL(
    "INSERT INTO tasks (id, {cols}) SELECT id, {cols}"
    " FROM jsonb_populate_recordset(NULL::tasks, %s::jsonb) ON CONFLICT (id) DO UPDATE SET {sets}"
).format(
    cols=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
    sets=sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in COLUMNS
    ),
)
_SELECT = sql.SQL("SELECT id, {cols} FROM tasks WHERE id = ANY(%s) FOR UPDATE").format(
    cols=sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
)


def load(conn: psycopg.Connection, task_ids: Iterable[UUID]) -> dict[UUID, TaskState]:
    """The tasks' current states, locked until the transaction ends."""
    rows = conn.execute(_SELECT, (list(task_ids),)).fetchall()
    return {row[0]: _state(row) for row in rows}


def _state(row: Sequence[Any]) -> TaskState:
    values = dict(zip(COLUMNS, row[1:], strict=True))
    values["status"] = TaskStatus(values["status"])
    if values["error_category"] is not None:
        values["error_category"] = ErrorCategory(values["error_category"])
    return TaskState(task_id=row[0], **values)


def save(conn: psycopg.Connection, states: Iterable[TaskState]) -> None:
    rows = [{**vars(state), "id": state.task_id} for state in states]
    if rows:
        conn.execute(_UPSERT, (json.dumps(rows, default=_json_scalar),))


def _json_scalar(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a task column type")


def delete(conn: psycopg.Connection, task_ids: Sequence[UUID]) -> None:
    if task_ids:
        conn.execute("DELETE FROM tasks WHERE id = ANY(%s)", (list(task_ids),))


def record_outcomes(conn: psycopg.Connection, outcomes: Sequence[CommandOutcome]) -> None:
    """Store verdicts and wake the API waiters (NOTIFY is delivered on commit).

    The notification's payload is `<command_id> <outcome>`, so a waiter learns an APPLIED
    verdict without reading the table; a replayed verdict is neither stored nor sent again.
    """
    if not outcomes:
        return
    columns = zip(
        *(
            (
                o.command_id,
                o.task_id,
                o.command_type,
                o.outcome.value,
                o.reason,
                o.status_code,
                o.version,
            )
            for o in outcomes
        ),
        strict=True,
    )
    conn.execute(
        "WITH stored AS ("
        " INSERT INTO command_outcomes"
        " (command_id, task_id, command_type, outcome, reason, status_code, version)"
        " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::text[],"
        " %s::int[], %s::bigint[])"
        " ON CONFLICT (command_id) DO NOTHING RETURNING command_id, outcome)"
        " SELECT pg_notify('command_outcomes', command_id::text || ' ' || outcome) FROM stored",
        [list(c) for c in columns],
    )


def add_to_outbox(
    conn: psycopg.Connection, rows: Sequence[tuple[int, str, str, bytes]]
) -> list[int]:
    """Queue (partition, topic, key, value) records for publication, in one statement;
    returns their outbox ids in the order of `rows`."""
    if not rows:
        return []
    partitions, topics, keys, values = zip(*rows, strict=True)
    ids = conn.execute(
        "INSERT INTO outbox (partition, topic, key, value)"
        " SELECT p, t, k, v FROM unnest(%s::int[], %s::text[], %s::text[], %s::bytea[])"
        " WITH ORDINALITY AS u(p, t, k, v, n) ORDER BY n RETURNING id",
        (list(partitions), list(topics), list(keys), list(values)),
    ).fetchall()
    # ids come from a sequence drawn in insertion order, which ORDER BY n fixes
    return sorted(i for (i,) in ids)


def pending_outbox(
    conn: psycopg.Connection, partition: int
) -> list[tuple[int, int, str, str, bytes]]:
    """A partition's unpublished (outbox id, partition, topic, key, value) rows, in order."""
    return conn.execute(
        "SELECT id, partition, topic, key, value FROM outbox WHERE partition = %s ORDER BY id",
        (partition,),
    ).fetchall()


def clear_outbox(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    if not ids:
        return
    conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", (list(ids),))


def claim(conn: psycopg.Connection, group: str, partition: int, owner: str) -> int:
    """Take a partition over: bump and return its epoch."""
    return conn.execute(
        "INSERT INTO partition_owners (group_id, partition, epoch, owner) VALUES (%s, %s, 1, %s)"
        " ON CONFLICT (group_id, partition) DO UPDATE"
        " SET epoch = partition_owners.epoch + 1, owner = EXCLUDED.owner RETURNING epoch",
        (group, partition, owner),
    ).fetchone()[0]


def fenced(conn: psycopg.Connection, group: str, epochs: dict[int, int]) -> dict[int, int | None]:
    """The partitions whose epoch in `epochs` no longer owns them, with the epoch that does.

    Locks the ownership rows for the transaction, so no new owner can claim them meanwhile.
    """
    rows = conn.execute(
        "SELECT partition, epoch FROM partition_owners"
        " WHERE group_id = %s AND partition = ANY(%s) FOR UPDATE",
        (group, list(epochs)),
    ).fetchall()
    current: dict[int, int] = dict(rows)
    return {p: current.get(p) for p, e in epochs.items() if current.get(p) != e}
