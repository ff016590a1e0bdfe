"""Monitoring routes over the task store: paginated lists with computed duration and error
flags, and one task's full detail (seed §1.5, inventory §2.5)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, Field

from api.field_types import BIGINT_MAX
from api.keys import HEARTBEATS, QUEUES, TASK_COUNTS, TASK_READER
from api.openapi import documented
from api.requests import parse_query, require_admin
from api.responses import json_response
from api.storage import signed_url
from api.task_models import PUBLIC_ALIASES, TaskType
from api.task_queries import SORTABLE, QueueLoad, TaskFilter, public
from api.tasks import read_task, task_id_of
from api.tenancy import IMAGE_INPUTS, may_access, scope
from processors.task_counts import aggregate, scope_of
from state.storage import BadKey, safe_key, stored_key, task_folder
from streams.queues import DEFAULT_QUEUES
from streams.records import TRAINING_TASK_TYPE, ErrorCategory, TaskStatus, WorkerRole

routes = web.RouteTableDef()
MAX_PAGE_SIZE = 500


class MonitoringQuery(BaseModel):
    # (page - 1) * page_size must fit the OFFSET Postgres takes (a bigint)
    page: int = Field(
        1, ge=1, le=BIGINT_MAX // MAX_PAGE_SIZE, description="Page number (1-indexed)"
    )
    page_size: int = Field(50, ge=1, le=MAX_PAGE_SIZE, description="Items per page")
    status: TaskStatus | None = None
    task_type: TaskType | None = None
    provider_type: str | None = None
    origin_instance: str | None = None
    origin_zone: str | None = None
    origin_tenant_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    search: str | None = Field(None, max_length=36, description="Search by task ID prefix")
    sort_by: Literal[tuple(SORTABLE)] = "created_at"  # type: ignore[valid-type]
    sort_order: Literal["asc", "desc"] = "desc"


class TaskListItem(BaseModel):
    id: UUID
    task_type: TaskType
    status: TaskStatus
    progress: float
    provider_type: str | None = None
    origin_instance: str
    origin_zone: str | None = None
    origin_tenant_id: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: float | None = Field(None, description="started_at to completed_at")
    has_error: bool


class TaskListResponse(BaseModel):
    items: list[TaskListItem]
    total: int
    page: int
    page_size: int
    pages: int


class TaskDetailResponse(BaseModel):
    id: UUID
    task_type: TaskType
    provider_type: str | None = None
    status: TaskStatus
    progress: float = 0.0
    origin_instance: str
    origin_zone: str | None = None
    origin_tenant_id: str | None = None
    origin_reference: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: float | None = None
    queue_name: str = "inference"
    priority: int = 0
    celery_task_id: str | None = None
    service_task_id: str | None = None
    executor_type: str | None = None
    executor_instance: str | None = None
    config: dict[str, Any] | None = None
    webhook_url: str | None = None
    errors: list[str] | None = None
    error_category: ErrorCategory | None = None
    retry_count: int = 0
    is_resumed: bool = False
    resume_attempt_count: int = 0
    last_resume_attempt: datetime | None = None
    service_requests: list[dict[str, Any]] | None = None
    task_data: dict[str, Any] = Field(default_factory=dict, description="Task-type specific fields")


class StatsQuery(BaseModel):
    origin_instance: str | None = None
    origin_zone: str | None = None


class AggregateStats(BaseModel):
    total_tasks: int
    by_status: dict[str, int]
    by_provider: dict[str, int]
    by_task_type: dict[str, int]
    tasks_last_hour: int = 0
    tasks_last_24h: int = 0


@routes.get("/api/v1/monitoring/stats")
@documented(
    "Get Monitoring Stats", "monitoring", query=StatsQuery, response=AggregateStats, errors=(403,)
)
async def get_monitoring_stats(request: web.Request) -> web.Response:
    """Counts by status, provider and task type, plus tasks created in the last hour and day,
    from the stream tables (eventually consistent, about a second behind). Admin only: the
    counts span every tenant."""
    require_admin(request)
    q: StatsQuery = parse_query(request, StatsQuery)
    snapshots = [s.counts for s in request.app[TASK_COUNTS].values()]
    stats = aggregate(snapshots, scope_of(q.origin_instance, q.origin_zone), datetime.now(UTC))
    return json_response(AggregateStats(**stats).model_dump(mode="json"))


class QueueStats(BaseModel):
    name: str = Field(..., description="Queue name")
    depth: int = Field(0, description="Number of pending tasks in queue")
    active_workers: int = Field(0, description="Number of workers consuming this queue")
    active_tasks: int = Field(0, description="Number of tasks currently being executed")
    reserved_tasks: int = Field(0, description="Number of tasks reserved by workers (prefetched)")
    avg_wait_time_ms: float | None = Field(
        None,
        description="Average time tasks wait in queue before execution (ms): created to started,"
        " over the tasks completed in the last hour",
    )
    tasks_completed_last_hour: int = Field(0, description="Tasks completed in the last hour")


class QueueStatsResponse(BaseModel):
    """Response for queue statistics endpoint."""

    queues: list[QueueStats] = Field(default_factory=list, description="Statistics per queue")
    total_pending: int = Field(0, description="Total pending tasks across all queues")
    total_active: int = Field(0, description="Total active tasks across all queues")
    timestamp: datetime = Field(..., description="Timestamp when stats were collected")


@routes.get("/api/v1/monitoring/queues")
@documented("Get Queue Stats", "monitoring", response=QueueStatsResponse, errors=(403,))
async def get_queue_stats(request: web.Request) -> web.Response:
    """Every queue (ADR 11): its depth (tasks PENDING and not yet taken by a worker), the live
    workers serving it, the tasks workers hold (`reserved_tasks`) and run (`active_tasks`),
    and the last hour's completions with their mean wait from created to started. The task
    counts are the single writer's (Postgres); what workers hold, and which are live, their
    heartbeats' (as of each one's last, sent every `TASKSTREAM_HEARTBEAT_INTERVAL_S`). Admin
    only: the queues span every tenant."""
    require_admin(request)
    now = datetime.now(UTC)
    load = await request.app[TASK_READER].queue_load(now - timedelta(hours=1))
    workers = [
        hb
        for role in (WorkerRole.INFERENCE, WorkerRole.TRAINING)
        for hb in request.app[HEARTBEATS].ready(role, now)
    ]
    declared = sorted(request.app[QUEUES].declared)
    names = dict.fromkeys([*DEFAULT_QUEUES, *declared, *sorted(load)])
    queues = []
    for name in names:
        tasks = load.get(name, QueueLoad())
        reserved = sum(hb.reserved_by_queue.get(name, 0) for hb in workers)
        queues.append(
            QueueStats(
                name=name,
                depth=max(0, tasks.pending - reserved),
                active_workers=sum(name in hb.queues for hb in workers),
                active_tasks=tasks.executing,
                reserved_tasks=reserved,
                avg_wait_time_ms=tasks.wait_ms,
                tasks_completed_last_hour=tasks.completed,
            )
        )
    body = QueueStatsResponse(
        queues=queues,
        total_pending=sum(q.depth for q in queues),
        total_active=sum(q.active_tasks for q in queues),
        timestamp=now,
    )
    return json_response(body.model_dump(mode="json"))


def _duration_ms(row: dict[str, Any]) -> float | None:
    if row["started_at"] is None or row["completed_at"] is None:
        return None
    return (row["completed_at"] - row["started_at"]).total_seconds() * 1000


def _item(row: dict[str, Any]) -> TaskListItem:
    return TaskListItem(
        **{
            k: row[k]
            for k in (
                "id",
                "task_type",
                "status",
                "progress",
                "provider_type",
                "origin_zone",
                "created_at",
                "started_at",
                "completed_at",
            )
        },
        origin_instance=row["origin_instance"] or "unknown",
        origin_tenant_id=row["tenant"],
        duration_ms=_duration_ms(row),
        has_error=bool(row["error_message"] or row["fields"].get("errors")),
    )


@routes.get("/api/v1/monitoring/tasks")
@documented("List Monitored Tasks", "monitoring", query=MonitoringQuery, response=TaskListResponse)
async def list_monitored_tasks(request: web.Request) -> web.Response:
    q: MonitoringQuery = parse_query(request, MonitoringQuery)
    tenant = scope(request)
    if tenant is not None and q.origin_tenant_id not in (None, tenant):
        body = TaskListResponse(items=[], total=0, page=q.page, page_size=q.page_size, pages=0)
        return json_response(body.model_dump(mode="json"))
    f = TaskFilter(
        status=q.status,
        task_type=q.task_type,
        exclude_task_type=TRAINING_TASK_TYPE,  # training tasks: /api/v1/training/
        provider_type=q.provider_type,
        origin_instance=q.origin_instance,
        origin_zone=q.origin_zone,
        tenant=tenant if tenant is not None else q.origin_tenant_id,
        created_after=q.created_after,
        created_before=q.created_before,
        id_prefix=q.search,
    )
    reader = request.app[TASK_READER]
    total = await reader.count(f)
    rows = await reader.list(
        f, (q.page - 1) * q.page_size, q.page_size, q.sort_by, q.sort_order == "desc", summary=True
    )
    body = TaskListResponse(
        items=[_item(r) for r in rows],
        total=total,
        page=q.page,
        page_size=q.page_size,
        pages=math.ceil(total / q.page_size),
    )
    return json_response(body.model_dump(mode="json"))


@routes.get("/api/v1/monitoring/tasks/{task_id}")
@documented("Get Monitored Task", "monitoring", response=TaskDetailResponse)
async def get_monitored_task(request: web.Request) -> web.Response:
    row = await read_task(request, task_id_of(request))
    shown = public(row)
    fields = row["fields"]
    detail = TaskDetailResponse(
        **{k: v for k, v in shown.items() if k in TaskDetailResponse.model_fields},
        duration_ms=_duration_ms(row),
        **{
            k: fields[k]
            for k in (
                "queue_name",
                "webhook_url",
                "is_resumed",
                "resume_attempt_count",
                "last_resume_attempt",
                "service_requests",
            )
            if fields.get(k) is not None
        },
        task_data={k: v for k, v in shown.items() if k not in TaskDetailResponse.model_fields},
    )
    return json_response(detail.model_dump(mode="json"))


class MediaItem(BaseModel):
    media_type: Literal["image", "video"] = Field(
        ..., description="Type of media: 'image' or 'video'"
    )
    name: str = Field(..., description="Descriptive name (e.g., 'base_image', 'result_image')")
    path: str = Field(..., description="Relative path in storage")
    url: str = Field(..., description="Full URL for preview")


class TaskMediaResponse(BaseModel):
    """Input and output media for a task."""

    task_id: UUID
    inputs: list[MediaItem] = Field(default_factory=list, description="Input media files")
    outputs: list[MediaItem] = Field(default_factory=list, description="Output media files")


#: Fields that name a task's output files or result URL, in the order they are listed.
MEDIA_OUTPUTS = (
    "result_image_path",
    "result_image_paths",
    "refined_image_path",
    "result_video_path",
    "result_url",
)
#: Fields that name a task's input images: every create field a worker reads as one (as the
#: tenancy check does), and the names the Public shapes show them under.
MEDIA_INPUTS = tuple(
    sorted(IMAGE_INPUTS | {PUBLIC_ALIASES[n] for n in IMAGE_INPUTS & PUBLIC_ALIASES.keys()})
)


@dataclass(frozen=True)
class MediaRef:
    name: str  # as the seed names media: 'base_image', 'result_image', 'input_image_0'
    kind: Literal["image", "video"]
    ref: str  # a storage key or an http(s) URL


def media_refs(task: Mapping[str, Any], fields: Sequence[str]) -> list[MediaRef]:
    """The files and URLs that `fields` of a task body name, in that order, once each:
    inline images (base64, data URLs) have no URL and are left out; a field's aliases
    (`base_image`, `base_image_url`, `base_image_path`) give one item."""
    refs: dict[tuple[str, str], MediaRef] = {}
    for field in fields:
        value = task.get(field)
        base = field.removesuffix("s") if isinstance(value, list) else field
        base = base.removesuffix("_path").removesuffix("_url")
        kind: Literal["image", "video"] = "video" if "video" in field else "image"
        for i, ref in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if not isinstance(ref, str) or not ref.strip():
                continue
            ref = ref.strip()
            if not ref.startswith(("http://", "https://")) and stored_key(ref) is None:
                continue  # inline, or a scheme no browser can fetch
            name = base if i is None else f"{base}_{i}"
            refs.setdefault((name, ref), MediaRef(name, kind, ref))
    return list(refs.values())


async def _media(ref: MediaRef, request: web.Request, own: str) -> MediaItem | None:
    """A media item with a URL: an http(s) URL as it is; a stored file, a signed URL, for
    paths the caller may read (a user can write any path into its own task's fields).
    Paths under `own`, the task's folder, need no check: the caller has just read the
    task."""
    item = {"media_type": ref.kind, "name": ref.name, "path": ref.ref}
    if ref.ref.startswith(("http://", "https://")):
        return MediaItem(**item, url=ref.ref)
    try:
        safe_key(ref.ref)
    except BadKey:
        return None
    if not ref.ref.startswith(own) and not await may_access(request, ref.ref):
        return None
    return MediaItem(**item, url=signed_url(request, ref.ref))


@routes.get("/api/v1/monitoring/tasks/{task_id}/media")
@documented("Get Task Media", "monitoring", response=TaskMediaResponse)
async def get_task_media(request: web.Request) -> web.Response:
    """Input and output media URLs for a task, usable directly in `<img>` or `<video>`:
    signed storage URLs (an hour), or the http(s) URL an input came from."""
    row = await read_task(request, task_id_of(request))
    # the stored body as well as the Public shape: REFINE's shows no base image
    task, own = {**row["fields"], **public(row)}, task_folder(row["task_type"], row["id"]) + "/"
    inputs = [m for r in media_refs(task, MEDIA_INPUTS) if (m := await _media(r, request, own))]
    outputs = [m for r in media_refs(task, MEDIA_OUTPUTS) if (m := await _media(r, request, own))]
    body = TaskMediaResponse(task_id=task["id"], inputs=inputs, outputs=outputs)
    return json_response(body.model_dump(mode="json"))
