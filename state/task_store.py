"""Task state rows, command outcomes, the outbox and partition fencing (Postgres).

Used by the task processor inside its per-batch transaction; all SQL is composed from fixed
identifiers with `psycopg.sql`, values always passed as parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from processors.task_machine import TaskState
from streams.records import CommandOutcome, ErrorCategory, TaskStatus

COLUMNS: tuple[str, ...] = tuple(f for f in TaskState.__dataclass_fields__ if f != "task_id")
_UPSERT = sql.SQL(
    "INSERT INTO tasks (id, {cols}) VALUES (%s, {vals}) ON CONFLICT (id) DO UPDATE SET {sets}"
).format(
    cols=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
    vals=sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)),
    sets=sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in COLUMNS
    ),
)
_SELECT = sql.SQL("SELECT id, {cols} FROM tasks WHERE id = ANY(%s) FOR UPDATE").format(
    cols=sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
)


class Fenced(Exception):
    """Another member owns this partition now; the batch must not be applied."""


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
    params = []
    for state in states:
        values = asdict(state)
        values["fields"] = Jsonb(values["fields"])
        params.append([state.task_id, *(values[c] for c in COLUMNS)])
    if params:
        with conn.cursor() as cur:
            cur.executemany(_UPSERT, params)


def delete(conn: psycopg.Connection, task_ids: Sequence[UUID]) -> None:
    if task_ids:
        conn.execute("DELETE FROM tasks WHERE id = ANY(%s)", (list(task_ids),))


def record_outcomes(conn: psycopg.Connection, outcomes: Sequence[CommandOutcome]) -> None:
    """Store verdicts and wake the API waiters (NOTIFY is delivered on commit)."""
    if not outcomes:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO command_outcomes"
            " (command_id, task_id, command_type, outcome, reason, status_code, version)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (command_id) DO NOTHING",
            [
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
            ],
        )
    conn.execute(
        "SELECT pg_notify('command_outcomes', c) FROM unnest(%s::text[]) AS c",
        ([str(o.command_id) for o in outcomes],),
    )


def add_to_outbox(
    conn: psycopg.Connection, partition: int, rows: Sequence[tuple[str, str, bytes]]
) -> list[int]:
    """Queue (topic, key, value) records for publication; returns their outbox ids."""
    if not rows:
        return []
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO outbox (partition, topic, key, value) VALUES (%s, %s, %s, %s) RETURNING id",
            [(partition, *row) for row in rows],
            returning=True,
        )
        ids = []
        while True:
            ids.extend(r[0] for r in cur.fetchall())
            if not cur.nextset():
                return ids


def pending_outbox(conn: psycopg.Connection, partition: int) -> list[tuple[int, str, str, bytes]]:
    return conn.execute(
        "SELECT id, topic, key, value FROM outbox WHERE partition = %s ORDER BY id", (partition,)
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


def check_owner(conn: psycopg.Connection, group: str, partition: int, epoch: int) -> None:
    """Raise `Fenced` unless `epoch` still owns the partition (locks it for the transaction)."""
    row = conn.execute(
        "SELECT epoch FROM partition_owners WHERE group_id = %s AND partition = %s FOR UPDATE",
        (group, partition),
    ).fetchone()
    if row is None or row[0] != epoch:
        raise Fenced(
            f"partition {partition} of {group} belongs to epoch {row and row[0]}, not {epoch}"
        )
