"""GPU worker processes: one consumer-group member per process.

`taskstream.gpu.inference` consumes `inference.jobs`; `taskstream.gpu.training` consumes
`training.jobs`. Foundation stage: jobs are looked up in `executors`; a job no executor
can run fails with a PROVIDER error report (so the task fails visibly instead of hanging).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from streams.consumer import Delivery, RecordConsumer
from streams.producer import RecordProducer
from streams.records import ErrorCategory, InferenceJob, TaskStatus, TrainingJob, WorkerReport, WorkerRole
from streams.runtime import MemberProcess, connect_serde, default_worker_id
from streams.topics import INFERENCE_JOBS, INFERENCE_STATUS, TRAINING_JOBS, TRAINING_STATUS, TopicSpec
from taskstream.settings import Settings


class WorkerKind(StrEnum):
    INFERENCE = "inference"
    TRAINING = "training"


@dataclass(frozen=True)
class WorkerSpec:
    role: WorkerRole
    group: str
    jobs: TopicSpec
    reports: TopicSpec


SPECS = {
    WorkerKind.INFERENCE: WorkerSpec(WorkerRole.INFERENCE, "taskstream.gpu.inference", INFERENCE_JOBS, INFERENCE_STATUS),
    WorkerKind.TRAINING: WorkerSpec(WorkerRole.TRAINING, "taskstream.gpu.training", TRAINING_JOBS, TRAINING_STATUS),
}

Executor = Callable[[InferenceJob | TrainingJob], dict]


class JobRunner:
    """Runs each job with the executor for its provider and reports the outcome."""

    def __init__(self, spec: WorkerSpec, worker_id: str, producer: RecordProducer,
                 executors: dict[str, Executor]) -> None:
        self._spec = spec
        self._worker_id = worker_id
        self._producer = producer
        self._executors = executors
        self.completed = 0

    def __call__(self, delivery: Delivery) -> None:
        job = delivery.record
        if not isinstance(job, InferenceJob | TrainingJob):
            raise TypeError(f"{self._spec.group} got {job.avro_name}")
        provider = getattr(job, "provider_type", None) or "local"
        if provider not in self._executors:
            self._report(job, TaskStatus.FAILED, ErrorCategory.PROVIDER,
                         f"no executor for provider {provider!r} on worker {self._worker_id}")
            return
        self._executors[provider](job)
        self.completed += 1

    def _report(self, job: InferenceJob | TrainingJob, status: TaskStatus, category: ErrorCategory | None,
                message: str | None) -> None:
        report = WorkerReport(
            report_id=uuid.uuid4(), job_id=job.job_id, task_id=job.task_id, worker_id=self._worker_id,
            attempt=job.attempt, status=status, error_category=category, error_message=message,
            timestamp=datetime.now(UTC),
        )
        self._producer.send(self._spec.reports, str(job.task_id), report)
        self._producer.flush()  # the offset is stored right after: the report must be durable


def create_worker(settings: Settings, kind: WorkerKind, executors: dict[str, Executor] | None = None) -> MemberProcess:
    spec = SPECS[kind]
    bootstrap = settings.require_bootstrap()
    serde, registry = connect_serde(settings.registry_url(), settings.registry_auth())
    producer = RecordProducer(bootstrap, serde)
    worker_id = settings.worker_id or default_worker_id(spec.role)
    runner = JobRunner(spec, worker_id, producer, executors or {})
    consumer = RecordConsumer(bootstrap, spec.group, [spec.jobs], serde, runner, producer,
                              settings.kafka_session_timeout_ms)
    return MemberProcess(
        role=spec.role, worker_id=worker_id, producer=producer, consumers=[consumer],
        interval_s=settings.heartbeat_interval_s, queues=[spec.jobs.name],
        status=lambda: {"completed_count": runner.completed},
        on_close=[registry.close],
    )
