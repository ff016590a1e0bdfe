"""GPU worker processes: one consumer-group member per process.

`taskstream.gpu.inference` consumes `inference.jobs`; `taskstream.gpu.training` consumes
`training.jobs`. Each job runs on the executor registered for its `provider_type`
(`local` when unset) and is reported COMPLETED with the executor's result; a job no
executor can run is reported FAILED with a PROVIDER error, so its task fails visibly
instead of hanging. Executors arrive with the inference and training issues.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from uuid import UUID

from gpu.cancellations import CancellationWatch
from gpu.executors import JobCancelled, JobContext
from gpu.executors.echo import echo
from streams.consumer import Delivery, RecordConsumer
from streams.producer import RecordProducer
from streams.records import (
    ErrorCategory,
    InferenceJob,
    TaskStatus,
    TrainingJob,
    WorkerReport,
    WorkerRole,
)
from streams.runtime import MemberProcess, connect_serde, default_worker_id
from streams.topics import (
    INFERENCE_JOBS,
    INFERENCE_STATUS,
    TRAINING_JOBS,
    TRAINING_STATUS,
    TopicSpec,
)
from taskstream.settings import Settings

logger = logging.getLogger(__name__)

#: Runs one job and returns its type-specific result fields (reported as `result_json`).
Executor = Callable[[InferenceJob | TrainingJob, JobContext], dict]
#: At most this many progress reports a second per job.
PROGRESS_PER_S = 2.0

#: Executors every worker has; model-backed ones join them in the inference issue.
DEFAULT_EXECUTORS: dict[str, Executor] = {"echo": echo}


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
    WorkerKind.INFERENCE: WorkerSpec(
        WorkerRole.INFERENCE, "taskstream.gpu.inference", INFERENCE_JOBS, INFERENCE_STATUS
    ),
    WorkerKind.TRAINING: WorkerSpec(
        WorkerRole.TRAINING, "taskstream.gpu.training", TRAINING_JOBS, TRAINING_STATUS
    ),
}


class JobRunner:
    """Runs each job with the executor for its provider and reports the outcome."""

    def __init__(
        self,
        spec: WorkerSpec,
        worker_id: str,
        producer: RecordProducer,
        executors: dict[str, Executor],
        cancelled: Callable[[UUID], bool] = lambda task_id: False,
    ) -> None:
        self._spec = spec
        self._worker_id = worker_id
        self._producer = producer
        self._executors = executors
        self._cancelled = cancelled
        self.completed = 0

    def __call__(self, delivery: Delivery) -> None:
        job = delivery.record
        if not isinstance(job, InferenceJob | TrainingJob):
            raise TypeError(f"{self._spec.group} got {job.avro_name}")
        provider = getattr(job, "provider_type", None) or "local"
        executor = self._executors.get(provider)
        if executor is None:
            self._report(
                job,
                TaskStatus.FAILED,
                error_category=ErrorCategory.PROVIDER,
                error_message=f"no executor for provider {provider!r} on worker {self._worker_id}",
            )
            return
        if self._cancelled(job.task_id):
            return  # cancelled while queued: nothing to run, nothing to report
        self._report(job, TaskStatus.EXECUTING)
        try:
            result = executor(job, self._context(job))
        except JobCancelled:
            logger.info("stopped job %s: task %s was cancelled", job.job_id, job.task_id)
        except ValueError as exc:  # bad input: retrying cannot help
            self._report(
                job,
                TaskStatus.FAILED,
                error_category=ErrorCategory.VALIDATION,
                error_message=str(exc),
            )
        except Exception as exc:  # noqa: BLE001 - anything else may pass on a retry
            logger.warning("job %s of task %s failed: %r", job.job_id, job.task_id, exc)
            self._report(
                job,
                TaskStatus.FAILED,
                error_category=ErrorCategory.TRANSIENT,
                error_message=str(exc) or type(exc).__name__,
                retryable=True,
            )
        else:
            self._report(job, TaskStatus.COMPLETED, progress=100.0, result_json=json.dumps(result))
            self.completed += 1

    def _context(self, job: InferenceJob | TrainingJob) -> JobContext:
        last = [time.monotonic()]

        def progress(percent: float) -> None:
            now = time.monotonic()
            if now - last[0] >= 1 / PROGRESS_PER_S:
                last[0] = now
                self._report(job, TaskStatus.EXECUTING, progress=max(0.0, min(99.0, percent)))

        return JobContext(should_stop=lambda: self._cancelled(job.task_id), progress=progress)

    def _report(
        self, job: InferenceJob | TrainingJob, status: TaskStatus, **fields: object
    ) -> None:
        report = WorkerReport(
            report_id=uuid.uuid4(),
            job_id=job.job_id,
            task_id=job.task_id,
            worker_id=self._worker_id,
            attempt=job.attempt,
            status=status,
            timestamp=datetime.now(UTC),
            **fields,
        )
        # Sent at once (linger 5 ms); RecordConsumer flushes before storing the job's offset.
        self._producer.send(self._spec.reports, str(job.task_id), report)


def local_executors(settings: Settings) -> dict[str, Executor]:
    """The model-backed executors of an inference worker (the tiny pipeline is built into
    the models dir on first start when it is the default and missing)."""
    from gpu.executors.diffusion import DiffusionExecutor
    from gpu.images import FetchPolicy
    from gpu.models import DEFAULT_MODEL, ModelRegistry, build_tiny_pipeline
    from state.storage import LocalStorage

    registry = ModelRegistry(settings.models_root(), default=settings.default_model)
    if settings.default_model == DEFAULT_MODEL:
        build_tiny_pipeline(settings.models_root() / DEFAULT_MODEL)
    diffusion = DiffusionExecutor(
        registry,
        LocalStorage(settings.storage_root()),
        FetchPolicy(allow_private=settings.allow_private_image_urls),
        max_pixels=settings.worker_max_pixels,
    )
    return {"local": diffusion}


def create_worker(
    settings: Settings, kind: WorkerKind, executors: dict[str, Executor] | None = None
) -> MemberProcess:
    spec = SPECS[kind]
    if executors is None:
        executors = DEFAULT_EXECUTORS
        if kind == WorkerKind.INFERENCE:
            executors = {**executors, **local_executors(settings)}
    bootstrap = settings.require_bootstrap()
    serde, registry = connect_serde(settings.registry_url(), settings.registry_auth())
    producer = RecordProducer(bootstrap, serde)
    worker_id = settings.worker_id or default_worker_id(spec.role)
    watch = CancellationWatch(bootstrap, serde, settings.kafka_watch_fetch_wait_ms).start()
    runner = JobRunner(
        spec,
        worker_id,
        producer,
        executors,
        cancelled=watch.is_cancelled,
    )
    consumer = RecordConsumer(
        bootstrap,
        spec.group,
        [spec.jobs],
        serde,
        runner,
        producer,
        settings.kafka_session_timeout_ms,
        settings.kafka_fetch_wait_ms,
    )
    return MemberProcess(
        role=spec.role,
        worker_id=worker_id,
        producer=producer,
        consumers=[consumer],
        interval_s=settings.heartbeat_interval_s,
        queues=[spec.jobs.name],
        status=lambda: {"completed_count": runner.completed},
        on_close=[watch.stop, registry.close],
    )
