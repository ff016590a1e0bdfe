"""Reading tasks from Postgres into their Public shapes, tenant-scoped."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql

from api.task_models import PUBLIC_ALIASES, TASK_PUBLIC, TaskType
from state.db import AsyncDatabase
from streams.records import TaskStatus

_COLUMNS = (
    "id, task_type, status, tenant, priority, provider_type, fallback_provider_type, retry_count,"
    " progress, created_at, updated_at, started_at, completed_at, error_message, error_category,"
    " is_deleted, deleted_at, origin_instance, origin_zone, fields"
)
_NAMES = [c.strip() for c in _COLUMNS.split(",")]


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


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A task row as its `*TaskPublic` JSON body."""
    fields: dict[str, Any] = dict(row["fields"])
    for create_name, public_name in PUBLIC_ALIASES.items():
        if create_name in fields and fields.get(public_name) is None:
            fields[public_name] = fields[create_name]
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
        query = sql.SQL("SELECT {} FROM tasks WHERE id = %s").format(sql.SQL(_COLUMNS))
        row = await self._db.fetchone(query, (task_id,))
        if row is None:
            return None
        found = dict(zip(_NAMES, row, strict=True))
        if tenant is not None and found["tenant"] != tenant:
            return None
        return found

    async def list(
        self,
        f: TaskFilter,
        skip: int,
        limit: int,
        order_by: str = "created_at",
        descending: bool = True,
    ) -> list[dict[str, Any]]:
        """One page of matching tasks, newest first unless told otherwise."""
        where, params = _where(f)
        direction = sql.SQL("DESC" if descending else "ASC")
        query = sql.SQL(
            "SELECT {} FROM tasks WHERE {} ORDER BY {} {} NULLS LAST, id {} LIMIT %s OFFSET %s"
        ).format(sql.SQL(_COLUMNS), where, SORTABLE[order_by], direction, direction)
        async with self._db.transaction() as conn:
            rows = await (await conn.execute(query, (*params, limit, skip))).fetchall()
        return [dict(zip(_NAMES, row, strict=True)) for row in rows]

    async def count(self, f: TaskFilter) -> int:
        where, params = _where(f)
        async with self._db.transaction() as conn:
            row = await (
                await conn.execute(
                    sql.SQL("SELECT count(*) FROM tasks WHERE {}").format(where), params
                )
            ).fetchone()
        return row[0]


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
        conditions.append(sql.SQL("id::text LIKE %s"))
        params.append(f.id_prefix.lower().replace("%", "").replace("_", "") + "%")
    if not f.include_deleted:
        conditions.append(sql.SQL("NOT is_deleted"))
    return (sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE")), params
