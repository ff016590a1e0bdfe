"""Sartiq task routes: create, read, list, update, cancel, delete, clean up.

Writes become commands on `tasks.commands`; the handler then waits (bounded by
`TASKSTREAM_WRITE_TIMEOUT_S`) for the task processor's outcome and answers with the task as
it is after the command, so a read right after a write sees it. A rejected command answers
with the processor's reason and status (404, 409); a command still in flight past the bound
answers 202 with a `Location` to poll.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, TypeAdapter

from api.commands import CommandNotSent, CommandTooLarge
from api.field_types import Offset
from api.keys import COMMANDS, OUTCOMES, QUEUES, SETTINGS, STORAGE, TASK_READER
from api.openapi import COMMAND, Accepted, documented
from api.requests import parse_body, parse_query
from api.responses import field_error, json_array_response, json_response, problem, refusal
from api.task_models import (
    CREATE_BODY,
    TASK_PUBLIC,
    UPDATE_MODELS,
    ExperimentalFalTaskPublicUpdate,
    GenerationTaskPublic,
    GenerationTaskUpdate,
    LLMInteractionTaskPublicUpdate,
    TaskPublic,
    TaskPublicUpdate,
    TaskType,
)
from api.task_queries import TaskFilter, public, visible
from api.tenancy import check_image_inputs, scope
from state.storage import task_folder
from streams.partitioning import StickyTaskIds
from streams.queues import kind_of
from streams.records import (
    TASK_BODY_MAX_BYTES,
    CancelTask,
    CleanupTask,
    CreateTask,
    DeleteTask,
    TaskStatus,
    UpdateTask,
    body_too_large,
)
from streams.records import (
    TRAINING_TASK_TYPE as TRAINING,
)
from streams.topics import TASK_COMMANDS

logger = logging.getLogger(__name__)
routes = web.RouteTableDef()
_TASK_LIST = TypeAdapter(list[TaskPublic])
_GEN_LIST = TypeAdapter(list[GenerationTaskPublic])
_ANY_UPDATE = TypeAdapter(
    TaskPublicUpdate | ExperimentalFalTaskPublicUpdate | LLMInteractionTaskPublicUpdate
)
_IDEMPOTENCY_NAMESPACE = uuid.UUID("0b6b8f5e-54d4-4f4e-8f38-2f1f0d7c9a21")
# Tasks created together share a tasks.commands partition, and so their produce requests.
new_task_id = StickyTaskIds(TASK_COMMANDS.partitions).new


class GenerationListQuery(BaseModel):
    """The filters of `GET /api/v1/tasks/generation` (the seed's: no task_type)."""

    limit: int = Field(100, ge=1, le=1000, description="Maximum number of tasks to return")
    skip: Offset = 0
    status: TaskStatus | None = None
    origin_instance: str | None = None
    origin_zone: str | None = None
    origin_tenant_id: str | None = None
    workflow_id: str | None = None
    include_deleted: bool = False


class ListQuery(GenerationListQuery):
    """The filters of `GET /api/v1/tasks/`."""

    task_type: TaskType | None = None


def task_id_of(request: web.Request) -> uuid.UUID:
    raw = request.match_info["task_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise field_error(
            ["path", "task_id"], "Input should be a valid UUID", "uuid_parsing"
        ) from None


def not_found(task_id: uuid.UUID) -> web.HTTPException:
    return problem(web.HTTPNotFound, f"task {task_id} not found")


async def read_task(
    request: web.Request,
    task_id: uuid.UUID,
    task_type: TaskType | str | None = None,
    known: dict | None = None,
) -> dict:
    """The caller's task (404 otherwise); `known` is the row as a command's outcome brought
    it, which spares the read."""
    if known is not None:
        row = visible(known, scope(request))
    else:
        row = await request.app[TASK_READER].get(task_id, scope(request))
    if row is None or row["task_type"] != (task_type or row["task_type"]):
        raise not_found(task_id)
    if task_type is None and row["task_type"] == TRAINING:  # served by /api/v1/training/
        raise not_found(task_id)
    return row


@dataclass(frozen=True)
class Settled:
    """How a command ended for its request: `response` to give at once (a rejection with its
    reason, or 202 while it is still in flight past the bound), or None once applied, with
    the task `row` as the command left it when its outcome brought it."""

    response: web.Response | None = None
    row: dict | None = None


async def settle(request: web.Request, command: Any, route: str = "/api/v1/tasks") -> Settled:
    """Send a command and await its outcome (a 202 only once the broker has the command,
    with `Location` under `route`, where the task is read)."""
    app = request.app
    pending = app[OUTCOMES].expect(command.command_id)
    try:
        try:
            delivery = app[COMMANDS].send(command, pending)
        except CommandNotSent:
            app[OUTCOMES].forget(command.command_id)
            raise
        outcome = await app[OUTCOMES].wait(
            command.command_id, pending, app[SETTINGS].write_timeout_s
        )
        if outcome is None:
            await delivery.wait()
    except CommandTooLarge as exc:
        raise problem(
            web.HTTPRequestEntityTooLarge, str(exc), max_size=exc.limit, actual_size=exc.size
        ) from None
    except CommandNotSent as exc:
        raise problem(
            web.HTTPServiceUnavailable,
            f"the broker did not acknowledge the command ({exc}); it may still be applied, so"
            " retry with the same Idempotency-Key"
            if exc.sent
            else f"the command was not sent ({exc}); nothing changed, so retry later",
        ) from None
    if outcome is None:
        return Settled(
            json_response(
                Accepted(
                    detail="accepted; still being applied", task_id=str(command.task_id)
                ).model_dump(),
                status=202,
                headers={"Location": f"{route}/{command.task_id}"},
            )
        )
    if not outcome.applied:
        return Settled(refusal(outcome.status_code or 409, outcome.reason))
    return Settled(row=outcome.row)


async def execute(
    request: web.Request, command: Any, task_type: TaskType | None = None
) -> web.Response:
    """Send a command, await its outcome, answer with the task as it is now."""
    settled = await settle(request, command)
    if settled.response is not None:
        return settled.response
    row = await read_task(request, command.task_id, task_type, settled.row)
    return json_response(public(row))


def creating_tenant(request: web.Request, origin_tenant_id: str | None) -> str | None:
    """The tenant a new task belongs to: the caller's (a user may not name another), or
    for admins the body's `origin_tenant_id`."""
    tenant = scope(request)
    if tenant is not None and origin_tenant_id not in (None, tenant):
        raise problem(web.HTTPForbidden, "cannot create tasks for another tenant")
    return tenant if tenant is not None else origin_tenant_id


def command_head(request: web.Request, task_id: uuid.UUID) -> dict[str, Any]:
    return {
        "command_id": uuid.uuid4(),
        "task_id": task_id,
        "issued_at": datetime.now(UTC),
        "tenant": scope(request),
    }


def id_to_create(request: web.Request, tenant: str | None) -> tuple[uuid.UUID, str | None]:
    """The id of the task a create makes, and the request's Idempotency-Key (400 when it is
    not 1-255 characters). The key binds the id, so retries with one key, concurrent ones
    included, target the same task: the same body gets the original, another body a 409."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return new_task_id(), None
    if not 1 <= len(key) <= 255:
        raise problem(web.HTTPBadRequest, "Idempotency-Key must be 1-255 characters")
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{tenant}\0{key}"), key


def create_command(
    request: web.Request,
    task_id: uuid.UUID,
    tenant: str | None,
    task_type: str,
    payload: dict[str, Any],
    **fields: Any,
) -> CreateTask:
    """The CreateTask for a new task of `tenant`, its body as canonical JSON (sorted keys, no
    spaces), so an idempotent retry with the same body compares equal."""
    return CreateTask(
        **{**command_head(request, task_id), "tenant": tenant},
        task_type=task_type,
        payload_json=bounded_body(json.dumps(payload, sort_keys=True, separators=(",", ":"))),
        **fields,
    )


def bounded_body(body_json: str) -> str:
    """`body_json`, unless it is over the size of a task body (413). The task processor
    checks the whole body a command leaves, this only what the request sent."""
    if len(body_json) > TASK_BODY_MAX_BYTES:  # ASCII-escaped, so characters are bytes
        raise problem(
            web.HTTPRequestEntityTooLarge,
            body_too_large(len(body_json)),
            max_size=TASK_BODY_MAX_BYTES,
            actual_size=len(body_json),
        )
    return body_json


def check_queue(
    request: web.Request, task_type: str, queue_name: str | None, loc: Sequence[str]
) -> None:
    """422 at the field for a `queue_name` this installation does not declare, as the task
    processor would refuse it (ADR 11)."""
    if queue_name is None:
        return
    try:
        request.app[QUEUES].resolve(kind_of(task_type), queue_name, None)
    except ValueError as exc:
        raise field_error([*loc, "queue_name"], str(exc), "queue") from None


# --- routes -------------------------------------------------------------------------------

#: /api/v1/tasks/{task_id}, which never matches /api/v1/tasks/generation (F30), so that route
#: alone answers there, and a method it lacks is a 405 that allows just its own.
TASK_PATH = "/api/v1/tasks/{task_id:(?!generation$)[^/]+}"


@routes.get("/api/v1/tasks/generation")
@documented("List Generation Tasks", "tasks", query=GenerationListQuery, response=_GEN_LIST)
async def list_generation_tasks(request: web.Request) -> web.StreamResponse:
    return await _list(request, TaskType.GENERATION)


@routes.get("/api/v1/tasks/generation/{task_id}")
@documented("Get Generation Task", "tasks", response=GenerationTaskPublic)
async def get_generation_task(request: web.Request) -> web.Response:
    return json_response(public(await read_task(request, task_id_of(request), TaskType.GENERATION)))


@routes.put("/api/v1/tasks/generation/{task_id}")
@documented(
    "Update Generation Task",
    "tasks",
    body=GenerationTaskUpdate,
    response=GenerationTaskPublic,
    errors=COMMAND,
)
async def update_generation_task(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    row = await read_task(request, task_id, TaskType.GENERATION)
    body = await parse_body(request, GenerationTaskUpdate)
    return await _update(request, row, body, TaskType.GENERATION)


@routes.post("/api/v1/tasks/generation/{task_id}/cancel")
@documented("Cancel Generation Task", "tasks", response=GenerationTaskPublic, errors=COMMAND)
async def cancel_generation_task(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    await read_task(request, task_id, TaskType.GENERATION)
    return await execute(request, CancelTask(**command_head(request, task_id)), TaskType.GENERATION)


@routes.post("/api/v1/tasks/")
@documented(
    "Create Task", "tasks", body=CREATE_BODY, response=TASK_PUBLIC, errors=(400, 403, *COMMAND)
)
async def create_task(request: web.Request) -> web.Response:
    body = await parse_body(request, CREATE_BODY)
    tenant = creating_tenant(request, body.origin_tenant_id)
    task_id, key = id_to_create(request, tenant)
    payload = body.model_dump(mode="json", exclude_none=True)
    where = ("body", body.task_type.value)
    check_queue(request, body.task_type.value, body.queue_name, where)
    await check_image_inputs(request, payload, where)
    payload["origin_tenant_id"] = tenant
    command = create_command(
        request,
        task_id,
        tenant,
        body.task_type.value,
        payload,
        priority=body.priority,
        provider_type=body.provider_type,
        idempotency_key=key,
        origin_instance=body.origin_instance,
        origin_zone=body.origin_zone,
    )
    return await execute(request, command)


@routes.get("/api/v1/tasks/")
@documented("List Tasks", "tasks", query=ListQuery, response=_TASK_LIST)
async def list_tasks(request: web.Request) -> web.StreamResponse:
    return await _list(request, None)


@routes.get(TASK_PATH)
@documented("Get Task", "tasks", response=TASK_PUBLIC)
async def get_task(request: web.Request) -> web.Response:
    return json_response(public(await read_task(request, task_id_of(request))))


@routes.put(TASK_PATH)
@documented("Update Task", "tasks", body=_ANY_UPDATE, response=TASK_PUBLIC, errors=COMMAND)
async def update_task(request: web.Request) -> web.Response:
    row = await read_task(request, task_id_of(request))
    body = await parse_body(request, UPDATE_MODELS[TaskType(row["task_type"])])
    return await _update(request, row, body, None)


@routes.delete(TASK_PATH)
@documented("Delete Task", "tasks", response=TASK_PUBLIC, errors=COMMAND)
async def delete_task(request: web.Request) -> web.Response:
    """Remove the task's record and files. A PENDING or EXECUTING task is cancelled first,
    so its job stops; the answer is the task as it was."""
    task_id = task_id_of(request)
    row = await read_task(request, task_id)
    settled = await settle(request, DeleteTask(**command_head(request, task_id)))
    if settled.response is not None:
        return settled.response
    await _remove_files(request, row)
    return json_response(public(row))


@routes.post("/api/v1/tasks/{task_id}/cleanup")
@documented("Cleanup Task", "tasks", response=TASK_PUBLIC, errors=COMMAND)
async def cleanup_task(request: web.Request) -> web.Response:
    """Remove the task's files and hide it from lists (`is_deleted`), keeping the record. A
    PENDING or EXECUTING task is cancelled first, so its job stops."""
    task_id = task_id_of(request)
    row = await read_task(request, task_id)
    settled = await settle(request, CleanupTask(**command_head(request, task_id)))
    if settled.response is not None:
        return settled.response
    await _remove_files(request, row)
    return json_response(public(await read_task(request, task_id, known=settled.row)))


async def _remove_files(request: web.Request, row: dict) -> None:
    """Remove a task's stored files once its delete or cleanup is applied."""
    folder = task_folder(row["task_type"], row["id"])
    removed = await asyncio.to_thread(request.app[STORAGE].delete_prefix, folder)
    if removed:
        logger.info("removed %d files of task %s", removed, row["id"])


@routes.post("/api/v1/tasks/{task_id}/cancel")
@documented("Cancel Task", "tasks", response=TASK_PUBLIC, errors=COMMAND)
async def cancel_task(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    await read_task(request, task_id)
    return await execute(request, CancelTask(**command_head(request, task_id)))


async def _update(
    request: web.Request, row: dict, body: BaseModel, task_type: TaskType | None
) -> web.Response:
    changes = body.model_dump(mode="json", exclude_unset=True)
    # The worker updates' origin_tenant_id may restate the tenant, never move the task: its
    # files and its visibility belong to the tenant that created it.
    if changes.pop("origin_tenant_id", row["tenant"]) != row["tenant"]:
        raise field_error(
            ["body", "origin_tenant_id"],
            f"a task stays with the tenant that created it ({row['tenant']!r})",
            "tenant_fixed",
        )
    if not changes:  # nothing to change: the task as just read
        return json_response(public(row))
    if "queue_name" in changes:
        check_queue(request, row["task_type"], changes["queue_name"], ("body",))
    command = UpdateTask(
        **command_head(request, row["id"]),
        changes_json=bounded_body(json.dumps(changes, sort_keys=True)),
    )
    return await execute(request, command, task_type)


async def _list(request: web.Request, task_type: TaskType | None) -> web.StreamResponse:
    """The tasks matching the query, all of `task_type` if given (else the query's)."""
    q: GenerationListQuery
    if task_type is None:
        q = parse_query(request, ListQuery)
        task_type = q.task_type
    else:
        q = parse_query(request, GenerationListQuery)
    tenant = scope(request)
    if tenant is not None and q.origin_tenant_id not in (None, tenant):
        return json_response([])  # another tenant's tasks do not exist for this caller
    f = TaskFilter(
        status=q.status,
        task_type=task_type,
        exclude_task_type=TRAINING,
        origin_instance=q.origin_instance,
        origin_zone=q.origin_zone,
        tenant=tenant if tenant is not None else q.origin_tenant_id,
        workflow_id=q.workflow_id,
        include_deleted=q.include_deleted,
    )
    return await json_array_response(
        request, request.app[TASK_READER].walk(f, q.skip, q.limit), public
    )
