"""The task state machine: the pure core of the task processor.

`handle(state, message, now)` takes a task's current state (None when there is none) and one
command or worker report, and returns a `Decision`: the new state, the events and jobs to
publish, and (for commands) the outcome the API awaits. No I/O, no clocks, no randomness:
the caller passes `now`, and ids of derived records (jobs) are uuid5 of their cause, so a
replayed message produces records with the same ids and versions, which downstream
consumers use to drop the duplicate.

    PENDING -> EXECUTING -> COMPLETED | FAILED | CANCELLED
    PENDING -> CANCELLED;  FAILED | CANCELLED -> PENDING (retry, retry_count + 1)
    a retryable failure goes back to PENDING until `MAX_RETRIES`, then to the fallback
    provider if the task names one, then FAILED.

TRAINING tasks live the same life and go to the training consumer group as `TrainingJob`s.
While EXECUTING, their worker reports carry details (phase, preprocessing stage and counts,
step, ETA, logs) that are merged into the task's fields, and each report is announced as a
`PreprocessingStatusEvent` or `TrainingStatusEvent` (F46, F47) after the `TaskStatusEvent`.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from api.field_types import finite
from api.task_bodies import body_problem, has_nul
from streams.queues import INFERENCE as INFERENCE_KIND
from streams.queues import TRAINING as TRAINING_KIND
from streams.queues import Queues, job_topics, kind_of
from streams.records import (
    TASK_BODY_MAX_BYTES,
    TRAINING_TASK_TYPE,
    CancelTask,
    CleanupTask,
    CommandOutcome,
    CommandOutcomeKind,
    CreateTask,
    DeleteTask,
    ErrorCategory,
    EventType,
    InferenceJob,
    InferenceStatusEvent,
    JobCancelled,
    PreprocessingStatusEvent,
    Record,
    RetryTask,
    TaskCreatedEvent,
    TaskDeleted,
    TaskStatus,
    TaskStatusEvent,
    TaskUpdated,
    TrainingJob,
    TrainingStatusEvent,
    UpdateTask,
    WorkerReport,
    body_too_large,
)
from streams.topics import TASK_CANCELLATIONS, TopicSpec

TRAINING = TRAINING_TASK_TYPE
MAX_RETRIES = 2  # automatic retries of retryable failures, before the fallback provider
TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
ACTIVE = frozenset({TaskStatus.PENDING, TaskStatus.EXECUTING})
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.EXECUTING, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    TaskStatus.EXECUTING: frozenset(
        {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.PENDING}
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset({TaskStatus.PENDING}),
    TaskStatus.CANCELLED: frozenset({TaskStatus.PENDING}),
}
# Columns of the task that an UpdateTask may set directly; everything else lands in `fields`.
_COLUMN_UPDATES = frozenset({"priority", "progress", "retry_count", "provider_type"})
DEFAULT_ROUTING = Queues()  # the default queues only
_NAMESPACE = uuid.UUID("6f1f3e0e-2b7a-4c55-9a51-3d0f1c2e7b10")


def derived_id(cause: UUID, what: str) -> UUID:
    """A stable id for something caused by `cause` (same cause, same id)."""
    return uuid.uuid5(_NAMESPACE, f"{cause}:{what}")


@functools.lru_cache(maxsize=8192)
def job_id(task_id: UUID, attempt: int) -> UUID:
    """The id of a task's job for one attempt, which every status event of the attempt also
    carries (`backend_prediction_id`): cached, as a uuid5 costs a SHA-1."""
    return derived_id(task_id, f"job-{attempt}")


@dataclass(frozen=True)
class TaskState:
    task_id: UUID
    task_type: str
    status: TaskStatus
    version: int
    created_at: datetime
    updated_at: datetime
    tenant: str | None = None
    priority: int = 0
    provider_type: str | None = None
    fallback_provider_type: str | None = None
    on_fallback: bool = False
    retry_count: int = 0
    attempt: int = 1
    progress: float = 0.0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    error_category: ErrorCategory | None = None
    is_deleted: bool = False
    deleted_at: datetime | None = None
    idempotency_key: str | None = None
    origin_instance: str | None = None
    origin_zone: str | None = None
    origin_version: str | None = None
    payload_json: str = "{}"  # the create body as sent, for idempotent re-creates
    fields: dict[str, Any] = field(default_factory=dict)  # type-specific and optional fields


@dataclass(frozen=True)
class Decision:
    state: TaskState | None
    events: tuple[Record, ...] = ()
    jobs: tuple[Record, ...] = ()
    outcome: CommandOutcome | None = None


Message = CreateTask | UpdateTask | CancelTask | RetryTask | DeleteTask | CleanupTask | WorkerReport


def handle(
    state: TaskState | None, message: Message, now: datetime, queues: Queues = DEFAULT_ROUTING
) -> Decision:
    """Apply one command or worker report to a task's state. A malformed command is
    rejected with 422 and its reason; reports must have passed `check_report`. `queues` are
    the ones the installation declared, which a task may name (ADR 11)."""
    if isinstance(message, WorkerReport):
        return _report(state, message, now)
    try:
        _check_strings(message)
        if isinstance(message, CreateTask):
            return _create(state, message, now, queues)
        if state is None or not _visible_to(state, message.tenant):
            return _rejected(state, message, now, 404, f"task {message.task_id} not found")
        if state.is_deleted and isinstance(message, UpdateTask | RetryTask):
            return _rejected(
                state,
                message,
                now,
                409,
                f"task {message.task_id} was cleaned up: its files are gone and its record is"
                " kept as it was; create a new task instead",
            )
        if isinstance(message, UpdateTask):
            return _stopping_job(state, _update(state, message, now, queues), now)
        handler = {
            CancelTask: _cancel,
            RetryTask: _retry,
            DeleteTask: _delete,
            CleanupTask: _cleanup,
        }[type(message)]
        return _stopping_job(state, handler(state, message, now), now)
    except Malformed as exc:
        return _rejected(state, message, now, 422, str(exc))


class Malformed(ValueError):
    """A message the task store could not hold or the machine cannot apply, and why."""


def check_report(report: WorkerReport) -> None:
    """Raise `Malformed` for a worker report that cannot be applied (the processor
    dead-letters it): a `result_json` that is not a JSON object (or holds NaN or Infinity),
    a progress outside 0-100 (NaN included), or a NUL character."""
    _check_strings(report)
    if not 0 <= report.progress <= 100:
        raise Malformed(f"progress must be a number from 0 to 100, not {report.progress!r}")
    if report.result_json is not None:
        _json_object(report.result_json, "result_json")


def _check_strings(message: Message) -> None:
    """Postgres text and jsonb cannot hold NUL characters: a message carrying one, in a
    string field or escaped in a JSON one, is malformed."""
    for name, value in vars(message).items():  # pydantic's own iteration is ~5x slower
        if isinstance(value, str) and (
            has_nul(value) if name.endswith("_json") else "\x00" in value
        ):
            raise Malformed(f"{name} contains a NUL character (\\u0000), which cannot be stored")


def _json_object(text: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise Malformed(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Malformed(f"{name} must be a JSON object, not {type(value).__name__}")
    try:  # NaN and Infinity would be stored as null
        return finite(value)
    except ValueError as exc:
        raise Malformed(f"{name}: {exc}") from None


# What each column an update may set must hold (anything else fails the batch's write).
_COLUMN_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "priority": (lambda v: type(v) is int and -(2**31) <= v < 2**31, "a 32-bit integer"),
    "retry_count": (lambda v: type(v) is int and 0 <= v < 2**31, "a non-negative integer"),
    "progress": (
        lambda v: type(v) in (int, float) and 0 <= v <= 100,
        "a number from 0 to 100",
    ),
    "provider_type": (lambda v: v is None or type(v) is str, "a string or null"),
}


# --- commands ------------------------------------------------------------------------


def _create(state: TaskState | None, cmd: CreateTask, now: datetime, queues: Queues) -> Decision:
    if state is not None:
        same = state.payload_json == cmd.payload_json and state.task_type == cmd.task_type
        if cmd.idempotency_key is not None and state.idempotency_key == cmd.idempotency_key:
            if same:
                return Decision(state, outcome=_applied(cmd, state, now))
            return _rejected(
                state, cmd, now, 409, "Idempotency-Key was already used with a different body"
            )
        return _rejected(state, cmd, now, 409, f"task {cmd.task_id} already exists")
    payload = _json_object(cmd.payload_json, "payload_json")
    if (problem := body_problem(cmd.task_type, payload)) is not None:
        raise Malformed(problem)
    # the queue is fixed here, so that a later change of routing moves no queued task
    payload["queue_name"] = _queue(queues, cmd.task_type, payload.get("queue_name"), cmd)
    new = TaskState(
        task_id=cmd.task_id,
        task_type=cmd.task_type,
        status=TaskStatus.PENDING,
        version=1,
        created_at=now,
        updated_at=now,
        tenant=cmd.tenant,
        priority=cmd.priority,
        provider_type=cmd.provider_type,
        fallback_provider_type=payload.get("fallback_provider_type"),
        idempotency_key=cmd.idempotency_key,
        origin_instance=cmd.origin_instance,
        origin_zone=cmd.origin_zone,
        origin_version=cmd.origin_version,
        payload_json=cmd.payload_json,
        fields=payload,
    )
    dispatched = job(new, now)
    if len(dispatched.payload_json) > TASK_BODY_MAX_BYTES:
        return _rejected(None, cmd, now, 413, body_too_large(len(dispatched.payload_json)))
    context = {"provider_type": new.provider_type, "origin_tenant_id": new.tenant}
    created = TaskCreatedEvent(
        **_envelope(new, now, EventType.TASK_CREATED),
        metadata={k: v for k, v in context.items() if v is not None} or None,
        status=TaskStatus.PENDING.value,
        task_type=new.task_type,
        created_at=now,
        total_steps=1,
    )
    return Decision(new, (created,), (dispatched,), _applied(cmd, new, now))


def _queue(queues: Queues, task_type: str, name: object, task: CreateTask | TaskState) -> str:
    """The queue a task runs on, given the `queue_name` it names (if any) and its provider."""
    if name is not None and type(name) is not str:
        raise Malformed(f"queue_name must be a string or null, not {name!r}")
    try:
        return queues.resolve(kind_of(task_type), name, task.provider_type)
    except ValueError as exc:
        raise Malformed(f"queue_name: {exc}") from None


def _cancel(state: TaskState, cmd: CancelTask, now: datetime) -> Decision:
    if state.status not in ACTIVE:
        return _rejected(
            state,
            cmd,
            now,
            409,
            f"cannot cancel a {state.status.value} task; only PENDING or EXECUTING tasks can be"
            " cancelled",
        )
    new, events = _stop(state, now)
    return Decision(new, events, outcome=_applied(cmd, new, now))


def _retry(state: TaskState, cmd: RetryTask, now: datetime) -> Decision:
    if state.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        return _rejected(
            state,
            cmd,
            now,
            409,
            f"cannot retry a {state.status.value} task; only FAILED or CANCELLED tasks can be"
            " retried",
        )
    if why := _too_large(state.fields):
        return _rejected(state, cmd, now, 413, why)
    new = _requeue(state, now)
    return Decision(new, (_status_event(new, now),), (job(new, now),), _applied(cmd, new, now))


def _update(state: TaskState, cmd: UpdateTask, now: datetime, queues: Queues) -> Decision:
    changes = _json_object(cmd.changes_json, "changes_json")
    if "queue_name" in changes:  # moves the task's next attempt; a running one stays put
        changes["queue_name"] = _queue(queues, state.task_type, changes["queue_name"], state)
    for name, (valid, expected) in _COLUMN_CHECKS.items():
        if name in changes and not valid(changes[name]):
            raise Malformed(f"{name} must be {expected}, not {changes[name]!r}")
    # The worker updates' origin_tenant_id may restate the tenant, never move the task.
    if changes.pop("origin_tenant_id", state.tenant) != state.tenant:
        raise Malformed(f"origin_tenant_id cannot move a task to another tenant ({state.tenant!r})")
    status = changes.pop("status", None)
    if status is not None and status not in TaskStatus.__members__.values():
        raise Malformed(f"status must be one of {', '.join(TaskStatus)}, not {status!r}")
    new_status = TaskStatus(status) if status is not None else state.status
    if new_status != state.status and new_status not in TRANSITIONS[state.status]:
        return _rejected(
            state,
            cmd,
            now,
            409,
            f"cannot move a task from {state.status.value} to {new_status.value}",
        )
    columns = {k: changes[k] for k in _COLUMN_UPDATES & changes.keys()}
    field_changes = {k: v for k, v in changes.items() if k not in _COLUMN_UPDATES}
    fields = {**state.fields, **field_changes}
    starts_attempt = new_status == TaskStatus.PENDING and state.status != TaskStatus.PENDING
    if (field_changes or starts_attempt) and (why := _too_large(fields)):
        return _rejected(state, cmd, now, 413, why)
    if starts_attempt:  # a retry by hand, as RetryTask is: a fresh attempt, counted
        new = _requeue(state, now, fields=fields, **columns)
    else:
        new = _advance(state, now, fields=fields, **columns)
    events: list[Record] = []
    if changes:
        events.append(
            TaskUpdated(
                task_id=state.task_id,
                command_id=cmd.command_id,
                version=new.version,
                changes_json=json.dumps(changes, sort_keys=True),
                timestamp=now,
            )
        )
    jobs: tuple[Record, ...] = ()
    if new_status != state.status:
        new = _with_status(new, new_status, now)
        events.append(_status_event(new, now))
        if starts_attempt:
            jobs = (job(new, now),)
    return Decision(new, tuple(events), jobs, _applied(cmd, new, now))


def _delete(state: TaskState, cmd: DeleteTask, now: datetime) -> Decision:
    state, stopped = _stop(state, now)
    gone = TaskDeleted(
        task_id=state.task_id,
        command_id=cmd.command_id,
        version=state.version + 1,
        hard=True,
        timestamp=now,
    )
    return Decision(
        None, (*stopped, gone), outcome=_applied(cmd, state, now, version=state.version + 1)
    )


def _cleanup(state: TaskState, cmd: CleanupTask, now: datetime) -> Decision:
    if state.is_deleted:
        return Decision(state, outcome=_applied(cmd, state, now))
    state, stopped = _stop(state, now)
    new = _advance(state, now, is_deleted=True, deleted_at=now)
    gone = TaskDeleted(
        task_id=state.task_id,
        command_id=cmd.command_id,
        version=new.version,
        hard=False,
        timestamp=now,
    )
    return Decision(new, (*stopped, gone), outcome=_applied(cmd, new, now))


def _stopping_job(before: TaskState, decision: Decision, now: datetime) -> Decision:
    """`decision`, telling the workers to stop the job of the attempt it ended, if any: a
    command that cancels, deletes, cleans up, finishes or requeues an active task leaves its
    job running on a worker for nothing (its reports are dropped). The `JobCancelled` names
    the job, not the task, so the task's next attempt still runs."""
    after = decision.state
    if before.status not in ACTIVE or (
        after is not None and after.status in ACTIVE and after.attempt == before.attempt
    ):
        return decision
    stop = JobCancelled(
        job_id=job_id(before.task_id, before.attempt),
        task_id=before.task_id,
        attempt=before.attempt,
        cancelled_at=now,
    )
    return replace(decision, jobs=(stop, *decision.jobs))


def _stop(state: TaskState, now: datetime) -> tuple[TaskState, tuple[Record, ...]]:
    """`state` CANCELLED, with its status event, if it is PENDING or EXECUTING (as it is
    unchanged otherwise). A task that is deleted or cleaned up is cancelled first, and its
    job stopped (`_stopping_job`) instead of running on and storing files after they were
    removed."""
    if state.status not in ACTIVE:
        return state, ()
    cancelled = _advance(state, now, status=TaskStatus.CANCELLED, completed_at=now)
    return cancelled, (_status_event(cancelled, now),)


# --- worker reports ----------------------------------------------------------------------


def _report(state: TaskState | None, report: WorkerReport, now: datetime) -> Decision:
    # Stale attempts, unknown tasks and anything after a terminal status (CANCELLED above
    # all) are dropped: the task has moved on without this worker.
    if state is None or report.attempt != state.attempt or state.status in TERMINAL:
        return Decision(state)
    if report.status == TaskStatus.EXECUTING:
        details = json.loads(report.result_json or "{}")
        if (
            state.status == TaskStatus.EXECUTING
            and report.progress == state.progress
            and not details
        ):
            return Decision(state)
        new = _advance(
            state,
            now,
            status=TaskStatus.EXECUTING,
            started_at=state.started_at or report.timestamp,
            progress=max(state.progress, report.progress),
            fields={**state.fields, **details},
        )
        return Decision(new, (_status_event(new, now), *_training_events(new, now, details)))
    if report.status == TaskStatus.COMPLETED:
        result = json.loads(report.result_json or "{}")
        new = _advance(
            state,
            now,
            status=TaskStatus.COMPLETED,
            progress=100.0,
            started_at=state.started_at or report.timestamp,
            completed_at=now,
            fields={**state.fields, **result},
        )
        return Decision(new, (_status_event(new, now), _result_event(new, now)))
    if report.status == TaskStatus.FAILED:
        return _failed(state, report, now)
    return Decision(state)


def _failed(state: TaskState, report: WorkerReport, now: datetime) -> Decision:
    if report.retryable and (why := _too_large(state.fields)):
        # what workers added to the body meanwhile would not fit the retry's job
        report = report.model_copy(
            update={
                "retryable": False,
                "error_message": f"{report.error_message or 'failed'}; not retried: {why}",
            }
        )
    if report.retryable and state.retry_count < MAX_RETRIES:
        new = _requeue(state, now, error_message=report.error_message)
        return Decision(new, (_status_event(new, now),), (job(new, now),))
    if report.retryable and state.fallback_provider_type and not state.on_fallback:
        new = _requeue(
            state,
            now,
            provider_type=state.fallback_provider_type,
            on_fallback=True,
            error_message=report.error_message,
        )
        return Decision(new, (_status_event(new, now),), (job(new, now),))
    new = _advance(
        state,
        now,
        status=TaskStatus.FAILED,
        completed_at=now,
        error_message=report.error_message,
        error_category=report.error_category or ErrorCategory.UNKNOWN,
    )
    return Decision(new, (_status_event(new, now), _result_event(new, now)))


# --- helpers -------------------------------------------------------------------------------


def _visible_to(state: TaskState, tenant: str | None) -> bool:
    return tenant is None or state.tenant == tenant


def _advance(state: TaskState, now: datetime, **changes: Any) -> TaskState:
    return replace(state, version=state.version + 1, updated_at=now, **changes)


def _with_status(state: TaskState, status: TaskStatus, now: datetime) -> TaskState:
    if status == TaskStatus.EXECUTING:
        return replace(state, status=status, started_at=state.started_at or now)
    if status in TERMINAL:
        return replace(state, status=status, completed_at=now)
    return replace(state, status=status)


def _requeue(state: TaskState, now: datetime, **changes: Any) -> TaskState:
    """`state` back to PENDING for a new attempt, counted as a retry; `changes` (an update's
    columns, a report's error) win over the resets."""
    fresh = {
        "status": TaskStatus.PENDING,
        "retry_count": state.retry_count + 1,
        "attempt": state.attempt + 1,
        "progress": 0.0,
        "started_at": None,
        "completed_at": None,
        "error_category": None,
        "error_message": None,
    }
    return _advance(state, now, **{**fresh, **changes})


def _envelope(state: TaskState, now: datetime, event_type: EventType) -> dict[str, Any]:
    return {
        "event_type": event_type,
        "task_id": state.task_id,
        "timestamp": now,
        "origin_instance": state.origin_instance,
        "origin_zone": state.origin_zone,
        "origin_version": state.origin_version,
    }


def _status_event(state: TaskState, now: datetime) -> TaskStatusEvent:
    return TaskStatusEvent(
        **_envelope(state, now, EventType.TASK_STATUS),
        status=state.status,
        task_type=state.task_type,
        progress=state.progress,
        started_at=state.started_at,
        completed_at=state.completed_at,
        error_message=state.error_message,
        error_category=state.error_category,
    )


def _inference_event(state: TaskState, now: datetime) -> InferenceStatusEvent:
    """An inference job's result (F45), after its TaskStatusEvent. The seed's backend ids
    name the calling backend's generation and prediction; taskstream's own are the task and
    the job of the attempt that ended it."""
    return InferenceStatusEvent(
        **_envelope(state, now, EventType.INFERENCE_STATUS),
        status=state.status,
        backend_generation_id=state.task_id,
        backend_prediction_id=job_id(state.task_id, state.attempt),
        prompt_id=state.fields.get("prompt_id"),
        result_image_path=state.fields.get("result_image_path"),
        refined_image_path=state.fields.get("refined_image_path"),
        error_message=state.error_message,
        completed_at=state.completed_at,
    )


def _result_event(state: TaskState, now: datetime) -> Record:
    """How a finished task's result is announced: by its training or inference event."""
    if state.task_type != TRAINING:
        return _inference_event(state, now)
    if state.status == TaskStatus.FAILED and state.fields.get("phase", "PREPROCESSING") == (
        "PREPROCESSING"
    ):
        return _preprocessing_event(state, now, "FAILED")
    return _training_event(state, now, state.status.value)


def _training_events(state: TaskState, now: datetime, details: dict) -> tuple[Record, ...]:
    if state.task_type != TRAINING or not details:
        return ()
    if details.get("phase") == "PREPROCESSING":
        return (_preprocessing_event(state, now, "PREPROCESSING"),)
    if "preprocessing_completed_at" in details:  # the switch from preprocessing to training
        return (
            _preprocessing_event(state, now, "COMPLETED"),
            _training_event(state, now, "TRAINING"),
        )
    return (_training_event(state, now, "TRAINING"),)


def _preprocessing_event(state: TaskState, now: datetime, status: str) -> PreprocessingStatusEvent:
    f = state.fields
    done = status == "COMPLETED"
    return PreprocessingStatusEvent(
        **_envelope(state, now, EventType.PREPROCESSING_STATUS),
        status=status,
        current_stage=f.get("preprocessing_stage"),
        progress=100.0 if done else state.progress,
        processed_files_count=f.get("processed_files_count") or 0,
        total_files_count=f.get("total_files_count") or len(f.get("source_images") or []),
        processed_dataset_path=f.get("processed_dataset_path"),
        error_message=state.error_message if status == "FAILED" else None,
        completed_at=now if done else state.completed_at,
    )


def _training_event(state: TaskState, now: datetime, status: str) -> TrainingStatusEvent:
    f = state.fields
    return TrainingStatusEvent(
        **_envelope(state, now, EventType.TRAINING_STATUS),
        status=status,
        progress=state.progress,
        current_step=f.get("current_step") or 0,
        total_steps=f.get("total_steps") or f.get("steps") or 0,
        eta_seconds=f.get("eta_seconds"),
        local_model_path=f.get("local_model_path"),
        error_message=state.error_message,
        completed_at=state.completed_at,
    )


def _body_json(fields: dict[str, Any]) -> str:
    """A task's fields as its job carries them; its length is the body's size in bytes."""
    return json.dumps(fields, sort_keys=True)


def _too_large(fields: dict[str, Any]) -> str | None:
    """Why a job could not carry a task with these fields (None when it could). Creates and
    updates are held to the limit, but worker reports add to a task's fields too (EXECUTING
    details, a training's logs), so whatever starts a new attempt checks again."""
    size = len(_body_json(fields))
    return body_too_large(size) if size > TASK_BODY_MAX_BYTES else None


def job_topic(
    record: InferenceJob | TrainingJob | JobCancelled, queues: Queues = DEFAULT_ROUTING
) -> TopicSpec:
    """The topic a job record goes to: its queue's (ADR 11), where the inference jobs of
    tasks with priority > 0 have a lane of their own (ADR 10); and every worker watches
    `tasks.cancellations` for jobs to stop. A job of a queue `queues` no longer declares
    goes to its kind's default queue, whose topics always exist."""
    if isinstance(record, JobCancelled):
        return TASK_CANCELLATIONS
    kind = TRAINING_KIND if isinstance(record, TrainingJob) else INFERENCE_KIND
    queue = record.queue if record.queue in queues.declared else kind
    main, urgent = job_topics(kind, queue)
    return urgent if urgent is not None and record.priority > 0 else main


def job(state: TaskState, now: datetime) -> InferenceJob | TrainingJob:
    """The job that runs the task's current attempt."""
    if state.task_type == TRAINING:
        return TrainingJob(
            job_id=job_id(state.task_id, state.attempt),
            task_id=state.task_id,
            attempt=state.attempt,
            payload_json=_body_json(state.fields),
            enqueued_at=now,
            queue=state.fields.get("queue_name") or TRAINING_KIND,
        )
    return InferenceJob(
        job_id=job_id(state.task_id, state.attempt),
        task_id=state.task_id,
        task_type=state.task_type,
        attempt=state.attempt,
        provider_type=state.provider_type,
        fallback_provider_type=state.fallback_provider_type,
        priority=state.priority,
        payload_json=_body_json(state.fields),
        enqueued_at=now,
        queue=state.fields.get("queue_name") or INFERENCE_KIND,
    )


def _outcome(
    cmd: Message, now: datetime, kind: CommandOutcomeKind, **fields: Any
) -> CommandOutcome:
    return CommandOutcome(
        command_id=cmd.command_id,
        task_id=cmd.task_id,
        command_type=type(cmd).__name__,
        outcome=kind,
        timestamp=now,
        **fields,
    )


def _applied(
    cmd: Message, state: TaskState, now: datetime, version: int | None = None
) -> CommandOutcome:
    return _outcome(cmd, now, CommandOutcomeKind.APPLIED, version=version or state.version)


def _rejected(
    state: TaskState | None, cmd: Message, now: datetime, status_code: int, reason: str
) -> Decision:
    """The command changes nothing; the API answers `status_code` with `reason`."""
    return Decision(
        state,
        outcome=_outcome(
            cmd, now, CommandOutcomeKind.REJECTED, reason=reason, status_code=status_code
        ),
    )
