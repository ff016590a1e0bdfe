"""Reading tasks from Postgres into their Public shapes, tenant-scoped."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql

from api.task_models import PUBLIC_ALIASES, TASK_PUBLIC, TaskType
from state.db import AsyncDatabase
from state.task_store import READ_COLUMNS
from streams.records import TaskStatus

_NAMES = list(READ_COLUMNS)


def _columns(fields: str = "fields") -> sql.Composable:
    """READ_COLUMNS, with `fields` read as the given expression."""
    return sql.SQL(", ").join(
        sql.SQL(fields) if name == "fields" else sql.Identifier(name) for name in _NAMES
    )


_COLUMNS = _columns()
# For lists that show no task body: `fields` shrinks to whether it holds errors, so a page
# of tasks near the body limit is not read whole to be thrown away.
_SUMMARY_COLUMNS = _columns(
    "jsonb_build_object('errors', coalesce(fields -> 'errors', 'null')"
    " NOT IN ('null', '[]', '\"\"'))"
)
# What `TaskReader.walk` reads: `fields` as text, which tells the size of each row; sized
# chunks of rows, so a chunk of rows near the body limit holds ~LIST_CHUNK_BYTES.
_WALK_COLUMNS = _columns("fields::text")
LIST_CHUNK_BYTES = 4 * 1024 * 1024
LIST_CHUNK_ROWS = (25, 100)  # the first chunk, and the most in any (~75 MB at the limit)
_GET = sql.SQL("SELECT {} FROM tasks WHERE id = %s").format(_COLUMNS).as_string()
_TIMES = ("created_at", "updated_at", "started_at", "completed_at", "deleted_at")


def row_from_json(data: dict[str, Any]) -> dict[str, Any]:
    """A task row sent as JSON (with a command's outcome) as the same values a read gives."""
    row = {name: data[name] for name in _NAMES}
    row["id"] = UUID(row["id"])
    for name in _TIMES:
        if row[name] is not None:
            row[name] = datetime.fromisoformat(row[name])
    return row


def visible(row: dict[str, Any] | None, tenant: str | None) -> dict[str, Any] | None:
    """The row if a caller scoped to `tenant` (None: every tenant) may see it."""
    if row is None or (tenant is not None and row["tenant"] != tenant):
        return None
    return row


@dataclass(frozen=True)
class TaskFilter:
    """Filters of GET /api/v1/tasks/; `tenant` is forced to the caller's for user tokens."""

    status: TaskStatus | None = None
    task_type: TaskType | str | None = None
    exclude_task_type: str | None = None  # the tasks API hides TRAINING tasks (own routes)
    origin_instance: str | None = None
    origin_zone: str | None = None
    tenant: str | None = None
    workflow_id: str | None = None
    include_deleted: bool = False
    provider_type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    id_prefix: str | None = None


#: Types whose Public shape reads `fal_app_id` and `fal_request_id` from `provider_config`
#: (the seed: "Get FAL app ID from provider config", read-only).
_FAL_FROM_PROVIDER_CONFIG = frozenset({"GENERATION", "EDITING", "REFINE"})


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A task row as its `*TaskPublic` JSON body."""
    fields: dict[str, Any] = dict(row["fields"])
    for create_name, public_name in PUBLIC_ALIASES.items():
        if create_name in fields and fields.get(public_name) is None:
            fields[public_name] = fields[create_name]
    config = fields.get("provider_config")
    if row["task_type"] in _FAL_FROM_PROVIDER_CONFIG and isinstance(config, dict):
        # from provider_config, unless the create or an update set the field itself
        for name in ("fal_app_id", "fal_request_id"):
            if fields.get(name) is None and isinstance(config.get(name), str):
                fields[name] = config[name]
    merged = {
        **fields,
        **{k: v for k, v in row.items() if k != "fields"},
        "origin_tenant_id": row["tenant"],
        "origin_instance": row["origin_instance"] or "unknown",
        "errors": fields.get("errors")
        or ([row["error_message"]] if row["error_message"] else None),
    }
    return TASK_PUBLIC.dump_python(TASK_PUBLIC.validate_python(merged), mode="json")


class TaskReader:
    def __init__(self, db: AsyncDatabase) -> None:
        self._db = db

    async def get(self, task_id: UUID, tenant: str | None) -> dict[str, Any] | None:
        """The task row, or None when it does not exist or belongs to another tenant."""
        row = await self._db.fetchone(_GET, (task_id,))
        return visible(dict(zip(_NAMES, row, strict=True)) if row else None, tenant)

    async def list(
        self,
        f: TaskFilter,
        skip: int,
        limit: int,
        order_by: str = "created_at",
        descending: bool = True,
        summary: bool = False,
    ) -> list[dict[str, Any]]:
        """One page of matching tasks, newest first unless told otherwise; with `summary`,
        `fields` holds only `errors`: whether the task has any."""
        where, params = _where(f)
        direction = sql.SQL("DESC" if descending else "ASC")
        query = sql.SQL(
            "SELECT {} FROM tasks WHERE {} ORDER BY {} {} NULLS LAST, id {} LIMIT %s OFFSET %s"
        ).format(
            _SUMMARY_COLUMNS if summary else _COLUMNS,
            where,
            SORTABLE[order_by],
            direction,
            direction,
        )
        rows = await self._db.fetchall(query, (*params, limit, skip))
        return [dict(zip(_NAMES, row, strict=True)) for row in rows]

    async def walk(
        self,
        f: TaskFilter,
        skip: int,
        limit: int,
        chunk_rows: tuple[int, int] = LIST_CHUNK_ROWS,
        chunk_bytes: int = LIST_CHUNK_BYTES,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The rows of `list(f, skip, limit)`, newest first, in chunks, each read by its own
        query: a list written to a client as it goes holds neither a connection while the
        client reads nor more than a chunk of rows. A chunk is sized by the rows before it
        to hold about `chunk_bytes` of task bodies, within `chunk_rows`. Each continues after
        the last row given (by created_at, id), so a task created or deleted meanwhile
        neither repeats nor skips one."""
        where, params = _where(f)
        first, most = chunk_rows
        after: tuple[datetime, UUID] | None = None
        size = min(first, limit)
        while size > 0:
            if after is None:
                query = _WALK_FIRST.format(_WALK_COLUMNS, where)
                args: tuple[Any, ...] = (*params, size, skip)
            else:
                query = _WALK_NEXT.format(_WALK_COLUMNS, where)
                args = (*params, *after, size)
            rows = await self._db.fetchall(query, args)
            chunk = [dict(zip(_NAMES, row, strict=True)) for row in rows]
            body_bytes = 0
            for row in chunk:
                body_bytes += len(row["fields"])
                # json, as psycopg would: orjson rounds integers past 64 bits, which jsonb keeps
                row["fields"] = json.loads(row["fields"])
            if chunk:
                yield chunk
            limit -= size
            if len(rows) < size:
                return
            after = (rows[-1][_CREATED_AT], rows[-1][_ID])
            per_row = max(1, body_bytes // len(rows))
            size = min(limit, most, max(1, chunk_bytes // per_row))

    async def queue_load(self, since: datetime) -> dict[str, QueueLoad]:
        """Per queue: its PENDING and EXECUTING tasks, and the tasks COMPLETED since `since`
        with their mean wait from created to started (ms)."""
        load: dict[str, QueueLoad] = defaultdict(QueueLoad)
        for queue, pending, executing in await self._db.fetchall(_ACTIVE_BY_QUEUE):
            load[queue].pending, load[queue].executing = pending, executing
        for queue, completed, wait_ms in await self._db.fetchall(_COMPLETED_BY_QUEUE, (since,)):
            load[queue].completed, load[queue].wait_ms = completed, wait_ms
        return dict(load)

    async def count(self, f: TaskFilter) -> int:
        where, params = _where(f)
        row = await self._db.fetchone(
            sql.SQL("SELECT count(*) FROM tasks WHERE {}").format(where), params
        )
        return row[0]


@dataclass
class QueueLoad:
    pending: int = 0
    executing: int = 0
    completed: int = 0
    wait_ms: float | None = None


# A task's queue is the one the task processor resolved; tasks older than queues ran on their
# kind's default queue (ADR 11).
_QUEUE = sql.SQL(
    "COALESCE(fields->>'queue_name',"
    " CASE task_type WHEN 'TRAINING' THEN 'training' ELSE 'inference' END)"
)
_ACTIVE_BY_QUEUE = sql.SQL(
    "SELECT {}, count(*) FILTER (WHERE status = 'PENDING'),"
    " count(*) FILTER (WHERE status = 'EXECUTING')"
    " FROM tasks WHERE status IN ('PENDING', 'EXECUTING') GROUP BY 1"
).format(_QUEUE)
_COMPLETED_BY_QUEUE = sql.SQL(  # through tasks_completed_idx
    "SELECT {}, count(*), avg(extract(epoch FROM started_at - created_at) * 1000)::float8"
    " FROM tasks WHERE status = 'COMPLETED' AND completed_at >= %s GROUP BY 1"
).format(_QUEUE)


# The chunk is chosen in a subquery and only its rows' bodies are turned into text: where
# the planner sorts instead of walking the index (near the end of the rows), a projection
# under the sort turned every row's body into text, ~140 ms for 100 bodies of 700 KB.
_WALK_FIRST = sql.SQL(
    "SELECT {} FROM (SELECT * FROM tasks WHERE {} ORDER BY created_at DESC, id DESC"
    " LIMIT %s OFFSET %s) AS chunk ORDER BY created_at DESC, id DESC"
)
_WALK_NEXT = sql.SQL(
    "SELECT {} FROM (SELECT * FROM tasks WHERE {} AND (created_at, id) < (%s, %s)"
    " ORDER BY created_at DESC, id DESC LIMIT %s) AS chunk ORDER BY created_at DESC, id DESC"
)
_CREATED_AT, _ID = _NAMES.index("created_at"), _NAMES.index("id")

#: What monitoring lists may sort by (fixed SQL, chosen by name).
SORTABLE: dict[str, sql.Composable] = {
    name: sql.Identifier(name)
    for name in (
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "status",
        "task_type",
        "priority",
        "progress",
    )
} | {"duration_ms": sql.SQL("(completed_at - started_at)")}


def _where(f: TaskFilter) -> tuple[sql.Composable, list[Any]]:
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (
        ("status", f.status),
        ("task_type", f.task_type),
        ("origin_instance", f.origin_instance),
        ("origin_zone", f.origin_zone),
        ("tenant", f.tenant),
        ("provider_type", f.provider_type),
    ):
        if value is not None:
            conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(str(value))
    if f.exclude_task_type is not None:
        conditions.append(sql.SQL("task_type <> %s"))
        params.append(f.exclude_task_type)
    if f.workflow_id is not None:
        conditions.append(sql.SQL("fields ->> 'workflow_id' = %s"))
        params.append(f.workflow_id)
    if f.created_after is not None:
        conditions.append(sql.SQL("created_at > %s"))
        params.append(f.created_after)
    if f.created_before is not None:
        conditions.append(sql.SQL("created_at < %s"))
        params.append(f.created_before)
    if f.id_prefix:
        conditions.append(sql.SQL("starts_with(id::text, %s)"))  # no LIKE wildcards
        params.append(f.id_prefix.lower())
    if not f.include_deleted:
        conditions.append(sql.SQL("NOT is_deleted"))
    return (sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE")), params
