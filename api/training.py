"""Training routes (seed 004 §1.3): create, list, get and cancel training tasks.

A training task is a task of type TRAINING in the same store and state machine as every
other task (same auth, tenancy, validation and read-your-writes: the answer shows the task
as the single writer left it). Its job goes to `training.jobs` and the
`taskstream.gpu.training` consumer group. The `TrainingTask` view is built from the task's
row: its fields hold the create body plus what the worker reported (stage, step, ETA, logs,
`local_model_path`). Statuses: see `api.training_models`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, TypeAdapter

from api.field_types import Offset
from api.keys import TASK_READER
from api.openapi import COMMAND, documented
from api.requests import parse_body, parse_query
from api.responses import json_array_response, json_response
from api.task_queries import TaskFilter
from api.tasks import (
    command_head,
    create_command,
    creating_tenant,
    id_to_create,
    read_task,
    settle,
    task_id_of,
)
from api.tenancy import check_image_inputs, scope
from api.training_models import (
    TRAINING_SERVER_SIDE,
    TrainingStatus,
    TrainingTask,
    TrainingTaskCreate,
)
from streams.records import TRAINING_TASK_TYPE, CancelTask, TaskStatus

routes = web.RouteTableDef()

_LIST = TypeAdapter(list[TrainingTask])


class TrainingListQuery(BaseModel):
    limit: int = Field(10, ge=1, le=1000)
    skip: Offset = 0


def training_status(task_status: str, fields: dict[str, Any]) -> TrainingStatus:
    """A task status as a `TrainingStatus`: EXECUTING is PREPROCESSING until the worker
    reports the TRAINING phase."""
    if task_status == TaskStatus.EXECUTING:
        phase = fields.get("phase")
        return TrainingStatus.TRAINING if phase == "TRAINING" else TrainingStatus.PREPROCESSING
    return TrainingStatus(task_status)


def training_view(row: dict[str, Any]) -> dict[str, Any]:
    fields = dict(row["fields"])
    view = {
        **fields,
        "id": row["id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "status": training_status(row["status"], fields),
        "progress": row["progress"],
        "total_steps": fields.get("total_steps") or fields.get("steps") or 1000,
        "started_at": row["started_at"],
        "completed_at": row["completed_at"],
        "error_message": row["error_message"],
        "origin_instance": row["origin_instance"] or "unknown",
        "origin_zone": row["origin_zone"],
        "origin_tenant_id": row["tenant"],
        "priority": row["priority"],
        "webhook_url": fields.get("webhook_url") or "",
    }
    return TrainingTask.model_validate(view).model_dump(mode="json")


async def _answer(request: web.Request, command: Any) -> web.Response:
    settled = await settle(request, command, "/api/v1/training")
    if settled.response is not None:
        return settled.response
    row = await read_task(request, command.task_id, TRAINING_TASK_TYPE, settled.row)
    return json_response(training_view(row))


@routes.post("/api/v1/training/")
@documented(
    "Create Training Task",
    "training",
    body=TrainingTaskCreate,
    response=TrainingTask,
    errors=(400, 403, *COMMAND),
)
async def create_training(request: web.Request) -> web.Response:
    """Create and start a new training task. Only `trigger_word` is required; a field sent
    as `null` takes its default. With an `Idempotency-Key` header, a retry with the same
    body returns the original task and one with another body is a 409, as for tasks."""
    body: TrainingTaskCreate = await parse_body(request, TrainingTaskCreate)
    tenant = creating_tenant(request, body.origin_tenant_id)
    task_id, key = id_to_create(request, tenant)
    payload = {**TRAINING_SERVER_SIDE, **body.model_dump(mode="json"), "origin_tenant_id": tenant}
    await check_image_inputs(request, payload)
    command = create_command(
        request,
        task_id,
        tenant,
        TRAINING_TASK_TYPE,
        payload,
        priority=TRAINING_SERVER_SIDE["priority"],
        idempotency_key=key,
        origin_instance=body.origin_instance,
        origin_zone=body.origin_zone,
    )
    return await _answer(request, command)


@routes.get("/api/v1/training/")
@documented("List Training Tasks", "training", query=TrainingListQuery, response=_LIST)
async def list_training(request: web.Request) -> web.StreamResponse:
    """All training tasks the caller may see, newest first (`limit` 10, `skip` 0)."""
    q: TrainingListQuery = parse_query(request, TrainingListQuery)
    rows = request.app[TASK_READER].walk(
        TaskFilter(task_type=TRAINING_TASK_TYPE, tenant=scope(request)), q.skip, q.limit
    )
    return await json_array_response(request, rows, training_view)


@routes.get("/api/v1/training/{task_id}")
@documented("Get Training Status", "training", response=TrainingTask)
async def get_training(request: web.Request) -> web.Response:
    row = await read_task(request, task_id_of(request), TRAINING_TASK_TYPE)
    return json_response(training_view(row))


@routes.post("/api/v1/training/{task_id}/cancel")
@documented("Cancel Training", "training", response=TrainingTask, errors=COMMAND)
async def cancel_training(request: web.Request) -> web.Response:
    """Cancel a pending or running training; a running one stops at the next step boundary
    and keeps the checkpoints written so far."""
    task_id = task_id_of(request)
    await read_task(request, task_id, TRAINING_TASK_TYPE)
    return await _answer(request, CancelTask(**command_head(request, task_id)))
