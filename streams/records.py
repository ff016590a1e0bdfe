"""pydantic mirrors of the Avro records in `schemas/avro/`.

The `.avsc` files are the source of truth; `tests/unit/streams/test_records.py` proves each
model here agrees with its schema field by field (name, type, nullability, default).
Every model names its Avro record in `avro_name`, which is also its schema-registry subject.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

#: The task type of training tasks (`/api/v1/training/`): same store and state machine as
#: every task, their own jobs topic and consumer group.
TRAINING_TASK_TYPE = "TRAINING"

#: The largest a task's body may be: its fields as the JSON its job carries (ASCII, so
#: characters are bytes). It keeps every record that carries a body (the command, the job,
#: `TaskUpdated`) under Kafka's 1 MB default message limit with room for its envelope. A
#: create or update that would pass it is refused with 413, by the API and, for commands
#: produced straight to Kafka, by the task processor.
TASK_BODY_MAX_BYTES = 768 * 1024


def body_too_large(size: int) -> str:
    """Why a task body of `size` bytes is refused."""
    return (
        f"the task's body is {size} bytes as JSON, over the limit of {TASK_BODY_MAX_BYTES};"
        " upload large inputs such as images to /api/v1/storage/images and pass their paths"
    )


class EventType(StrEnum):
    UNKNOWN = "UNKNOWN"
    TASK_CREATED = "TASK_CREATED"
    TASK_STATUS = "TASK_STATUS"
    INFERENCE_STATUS = "INFERENCE_STATUS"
    PREPROCESSING_STATUS = "PREPROCESSING_STATUS"
    TRAINING_STATUS = "TRAINING_STATUS"


class TaskStatus(StrEnum):
    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class ErrorCategory(StrEnum):
    UNKNOWN = "UNKNOWN"
    VALIDATION = "VALIDATION"
    TRANSIENT = "TRANSIENT"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    PROVIDER = "PROVIDER"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


class CommandOutcomeKind(StrEnum):
    UNKNOWN = "UNKNOWN"
    APPLIED = "APPLIED"
    REJECTED = "REJECTED"


class WorkflowStatus(StrEnum):
    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class StepStatus(StrEnum):
    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"


class WorkerRole(StrEnum):
    UNKNOWN = "UNKNOWN"
    API = "API"
    PROCESSORS = "PROCESSORS"
    INFERENCE = "INFERENCE"
    TRAINING = "TRAINING"


class Record(BaseModel):
    """A value that travels on Kafka as the Avro record named `avro_name`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    avro_name: ClassVar[str]


# --- seed events (Sartiq BaseEvent envelope + per-event fields) -----------------------


class _SeedEnvelope(Record):
    event_type: EventType
    task_id: UUID
    status: str
    timestamp: datetime | None = None
    entity_id: str | None = None
    metadata: dict[str, str] | None = None
    origin_instance: str | None = None
    origin_zone: str | None = None
    origin_version: str | None = None


class TaskCreatedEvent(_SeedEnvelope):
    avro_name: ClassVar[str] = "taskstream.events.TaskCreatedEvent"
    task_type: str
    created_at: datetime
    total_steps: int


class TaskStatusEvent(_SeedEnvelope):
    avro_name: ClassVar[str] = "taskstream.events.TaskStatusEvent"
    status: TaskStatus  # type: ignore[assignment]  # the one event whose status is the enum
    task_type: str
    progress: float = Field(description="Task progress percentage, 0-100.")
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    error_category: ErrorCategory | None = None


class InferenceStatusEvent(_SeedEnvelope):
    avro_name: ClassVar[str] = "taskstream.events.InferenceStatusEvent"
    backend_generation_id: UUID
    backend_prediction_id: UUID
    prompt_id: str | None = None
    result_image_path: str | None = None
    refined_image_path: str | None = None
    error_message: str | None = None
    completed_at: datetime | None = None


class PreprocessingStatusEvent(_SeedEnvelope):
    avro_name: ClassVar[str] = "taskstream.events.PreprocessingStatusEvent"
    current_stage: str | None = None
    progress: float
    processed_files_count: int
    total_files_count: int
    processed_dataset_path: str | None = None
    error_message: str | None = None
    completed_at: datetime | None = None


class TrainingStatusEvent(_SeedEnvelope):
    avro_name: ClassVar[str] = "taskstream.events.TrainingStatusEvent"
    progress: float
    current_step: int
    total_steps: int
    eta_seconds: float | None = None
    local_model_path: str | None = None
    error_message: str | None = None
    completed_at: datetime | None = None


# --- task history beyond the seed events ---------------------------------------------


class TaskUpdated(Record):
    avro_name: ClassVar[str] = "taskstream.events.TaskUpdated"
    task_id: UUID
    command_id: UUID
    version: int
    changes_json: str
    timestamp: datetime


class TaskDeleted(Record):
    avro_name: ClassVar[str] = "taskstream.events.TaskDeleted"
    task_id: UUID
    command_id: UUID
    version: int
    hard: bool
    timestamp: datetime


class CommandOutcome(Record):
    avro_name: ClassVar[str] = "taskstream.events.CommandOutcome"
    command_id: UUID
    task_id: UUID
    command_type: str
    outcome: CommandOutcomeKind
    reason: str | None = None
    status_code: int | None = None
    version: int | None = None
    timestamp: datetime


# --- commands --------------------------------------------------------------------------


class _TaskCommand(Record):
    command_id: UUID
    task_id: UUID
    issued_at: datetime
    tenant: str | None = None


class CreateTask(_TaskCommand):
    avro_name: ClassVar[str] = "taskstream.commands.CreateTask"
    task_type: str
    payload_json: str = "{}"
    priority: int = 0
    provider_type: str | None = None
    idempotency_key: str | None = None
    origin_instance: str | None = None
    origin_zone: str | None = None
    origin_version: str | None = None


class UpdateTask(_TaskCommand):
    avro_name: ClassVar[str] = "taskstream.commands.UpdateTask"
    changes_json: str


class CancelTask(_TaskCommand):
    avro_name: ClassVar[str] = "taskstream.commands.CancelTask"
    reason: str | None = None


class RetryTask(_TaskCommand):
    avro_name: ClassVar[str] = "taskstream.commands.RetryTask"
    reason: str | None = None


class DeleteTask(_TaskCommand):
    avro_name: ClassVar[str] = "taskstream.commands.DeleteTask"
    reason: str | None = None


class CleanupTask(_TaskCommand):
    avro_name: ClassVar[str] = "taskstream.commands.CleanupTask"
    reason: str | None = None


# --- jobs ------------------------------------------------------------------------------


class InferenceJob(Record):
    avro_name: ClassVar[str] = "taskstream.jobs.InferenceJob"
    job_id: UUID
    task_id: UUID
    task_type: str
    attempt: int = 1
    provider_type: str | None = None
    fallback_provider_type: str | None = None
    priority: int = 0
    model: str | None = None
    payload_json: str = "{}"
    enqueued_at: datetime
    queue: str = "inference"


class TrainingJob(Record):
    avro_name: ClassVar[str] = "taskstream.jobs.TrainingJob"
    job_id: UUID
    task_id: UUID
    attempt: int = 1
    payload_json: str = "{}"
    enqueued_at: datetime
    queue: str = "training"


class JobCancelled(Record):
    """A job its worker must stop, or skip if it has not started: its attempt ended while
    active (the task was cancelled, deleted or requeued). Keyed by the job, not the task, so
    a later attempt of the same task runs."""

    avro_name: ClassVar[str] = "taskstream.jobs.JobCancelled"
    job_id: UUID
    task_id: UUID
    attempt: int = 1
    cancelled_at: datetime


# --- workers ---------------------------------------------------------------------------


class WorkerHeartbeat(Record):
    avro_name: ClassVar[str] = "taskstream.workers.WorkerHeartbeat"
    worker_id: str
    role: WorkerRole
    group_id: str | None = None
    hostname: str
    pid: int
    ready: bool
    queues: list[str] = []
    concurrency: int = 1
    active_task_ids: list[str] = []
    completed_count: int = 0
    assigned_partitions: list[str] = []
    reserved_by_queue: dict[str, int] = {}
    started_at: datetime
    timestamp: datetime


class WorkerReport(Record):
    avro_name: ClassVar[str] = "taskstream.workers.WorkerReport"
    report_id: UUID
    job_id: UUID
    task_id: UUID
    worker_id: str
    attempt: int = 1
    status: TaskStatus
    progress: float = 0.0
    error_message: str | None = None
    error_category: ErrorCategory | None = None
    retryable: bool = False
    result_json: str | None = None
    timestamp: datetime


# --- workflows -------------------------------------------------------------------------


class _WorkflowCommand(Record):
    command_id: UUID
    workflow_id: UUID
    issued_at: datetime
    tenant: str | None = None


class CreateWorkflow(_WorkflowCommand):
    avro_name: ClassVar[str] = "taskstream.workflows.CreateWorkflow"
    definition_json: str
    start: bool = True


class StartWorkflow(_WorkflowCommand):
    avro_name: ClassVar[str] = "taskstream.workflows.StartWorkflow"


class CancelWorkflow(_WorkflowCommand):
    avro_name: ClassVar[str] = "taskstream.workflows.CancelWorkflow"


class ResumeWorkflow(_WorkflowCommand):
    avro_name: ClassVar[str] = "taskstream.workflows.ResumeWorkflow"


class WorkflowStepCompleted(Record):
    avro_name: ClassVar[str] = "taskstream.workflows.WorkflowStepCompleted"
    workflow_id: UUID
    step_id: str
    task_id: UUID | None = None
    status: StepStatus
    outputs_json: str = "{}"
    error_message: str | None = None
    timestamp: datetime


class WorkflowStatusChanged(Record):
    avro_name: ClassVar[str] = "taskstream.workflows.WorkflowStatusChanged"
    workflow_id: UUID
    status: WorkflowStatus
    completed_steps: int = 0
    total_steps: int = 0
    error_message: str | None = None
    timestamp: datetime


# --- monitoring ------------------------------------------------------------------------


class TaskCountsDelta(Record):
    avro_name: ClassVar[str] = "taskstream.monitoring.TaskCountsDelta"
    partition: int
    source_offsets: dict[str, int]
    deltas: dict[str, int]


class TaskCountsSnapshot(Record):
    avro_name: ClassVar[str] = "taskstream.monitoring.TaskCountsSnapshot"
    partition: int
    counts: dict[str, int]
    taken_at: datetime


def _concrete(cls: type[Record]) -> list[type[Record]]:
    found = []
    for sub in cls.__subclasses__():
        if "avro_name" in sub.__dict__:
            found.append(sub)
        found.extend(_concrete(sub))
    return found


#: Every record model by its Avro full name.
RECORD_TYPES: dict[str, type[Record]] = {cls.avro_name: cls for cls in _concrete(Record)}
