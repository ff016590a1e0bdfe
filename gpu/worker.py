"""GPU worker processes: one consumer-group member per job topic, one runner per process.

A worker serves its kind's default queue unless told others (ADR 11). On the default queues,
`taskstream.gpu.inference` consumes `inference.jobs`, and
`taskstream.gpu.inference.priority` the jobs of tasks with priority > 0 from
`inference.jobs.priority` (ADR 10); `taskstream.gpu.training` consumes `training.jobs`.
Another queue's groups are `<group>:<queue>` (see `streams.queues`). Each job runs on the
executor registered for its `provider_type` (`local` when unset) and is reported COMPLETED
with the executor's result; a job no executor can run is reported FAILED with a PROVIDER
error, so its task fails visibly instead of hanging.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from uuid import UUID

from gpu.cancellations import CancellationWatch
from gpu.executors import JobCancelled, JobContext
from gpu.executors.echo import echo
from gpu.runtime import JobConsumer
from streams.admin import ensure_topics
from streams.consumer import Delivery, PoisonMessage
from streams.producer import RecordProducer
from streams.queues import lanes
from streams.records import (
    ErrorCategory,
    InferenceJob,
    Record,
    TaskStatus,
    TrainingJob,
    WorkerReport,
    WorkerRole,
)
from streams.runtime import MemberProcess, connect_serde, default_worker_id
from streams.topics import INFERENCE_STATUS, TRAINING_STATUS, TopicSpec
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
    group: str  # the consumer group of the kind's default queue; other queues' derive from it
    reports: TopicSpec


SPECS = {
    WorkerKind.INFERENCE: WorkerSpec(
        WorkerRole.INFERENCE, "taskstream.gpu.inference", INFERENCE_STATUS
    ),
    WorkerKind.TRAINING: WorkerSpec(
        WorkerRole.TRAINING, "taskstream.gpu.training", TRAINING_STATUS
    ),
}


Job = InferenceJob | TrainingJob


class JobRunner:
    """Runs jobs (one, or a compatible batch) on their provider's executor and reports.

    A retried attempt waits `backoff_s * 2**(attempt - 2)` seconds (at most `max_backoff_s`)
    after it was enqueued, so a failing dependency is not hammered. An executor may offer
    `batch_key(job)` (jobs with equal keys can run as one call) and `run_batch(jobs, ctxs)`
    (one result dict or exception per job, in order).
    """

    def __init__(
        self,
        spec: WorkerSpec,
        worker_id: str,
        producer: RecordProducer,
        executors: dict[str, Executor],
        cancelled: Callable[[UUID], bool] = lambda job_id: False,  # by job id
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._spec = spec
        self._worker_id = worker_id
        self._producer = producer
        self._executors = executors
        self._cancelled = cancelled
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self.completed = 0
        self.active: set[UUID] = set()  # task ids running now, for heartbeats

    def __call__(self, delivery: Delivery) -> None:
        """The `RecordConsumer` handler form: run one delivered job."""
        self.run([self.check(delivery.record)])

    def check(self, job: Record) -> Job:
        if not isinstance(job, InferenceJob | TrainingJob):
            raise PoisonMessage(f"{self._spec.group} got {job.avro_name}, not a job")
        return job

    def batch_key(self, job: Job) -> Hashable | None:
        """Jobs with equal non-None keys may run together as one batched call."""
        provider = _provider(job)
        key_of = getattr(self._executors.get(provider), "batch_key", None)
        if key_of is None or job.attempt > 1:
            return None
        key = key_of(job)
        return None if key is None else (provider, key)

    def run(self, jobs: list[Job]) -> None:
        """Run one job, or a batch of jobs with the same `batch_key`; report each outcome."""
        runnable = []
        for job in jobs:
            executor = self._executors.get(_provider(job))
            if executor is None:
                self._report(
                    job,
                    TaskStatus.FAILED,
                    error_category=ErrorCategory.PROVIDER,
                    error_message=f"no executor for provider {_provider(job)!r} on worker"
                    f" {self._worker_id}",
                )
            elif self._wait_backoff(job) and not self._cancelled(job.job_id):
                runnable.append(job)
            # else: cancelled while queued, nothing to run and nothing to report
        if not runnable:
            return
        executor = self._executors[_provider(runnable[0])]
        contexts = [self._context(job) for job in runnable]
        for job in runnable:
            self.active.add(job.task_id)
            self._report(job, TaskStatus.EXECUTING)
        try:
            if len(runnable) == 1:
                outcomes: list[dict | BaseException] = [_call(executor, runnable[0], contexts[0])]
            else:
                outcomes = executor.run_batch(runnable, contexts)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - the whole batch failed the same way
            outcomes = [exc] * len(runnable)
        finally:
            self.active.difference_update(job.task_id for job in runnable)
        for job, outcome in zip(runnable, outcomes, strict=True):
            self._finish(job, outcome)

    def _wait_backoff(self, job: Job) -> bool:
        """Sleep out a retry's backoff; False if the task was cancelled meanwhile."""
        if job.attempt <= 1 or self._backoff_s <= 0:
            return True
        delay = min(self._max_backoff_s, self._backoff_s * 2 ** (job.attempt - 2))
        due = job.enqueued_at.timestamp() + delay
        while (left := due - time.time()) > 0:
            if self._cancelled(job.job_id):
                return False
            time.sleep(min(0.05, left))
        return True

    def _finish(self, job: Job, outcome: dict | BaseException) -> None:
        if isinstance(outcome, JobCancelled):
            logger.info("stopped job %s: task %s was cancelled", job.job_id, job.task_id)
        elif isinstance(outcome, ValueError):  # bad input: retrying cannot help
            self._report(
                job,
                TaskStatus.FAILED,
                error_category=ErrorCategory.VALIDATION,
                error_message=str(outcome),
            )
        elif isinstance(outcome, BaseException):  # anything else may pass on a retry
            logger.warning("job %s of task %s failed: %r", job.job_id, job.task_id, outcome)
            self._report(
                job,
                TaskStatus.FAILED,
                error_category=ErrorCategory.TRANSIENT,
                error_message=str(outcome) or type(outcome).__name__,
                retryable=True,
            )
        else:
            self._report(job, TaskStatus.COMPLETED, progress=100.0, result_json=json.dumps(outcome))
            self.completed += 1

    def _context(self, job: Job) -> JobContext:
        last = [time.monotonic()]

        def status(percent: float, details: dict | None = None, milestone: bool = False) -> None:
            now = time.monotonic()
            if milestone or now - last[0] >= 1 / PROGRESS_PER_S:
                last[0] = now
                self._report(
                    job,
                    TaskStatus.EXECUTING,
                    progress=max(0.0, min(99.0, percent)),
                    result_json=json.dumps(details) if details else None,
                )

        return JobContext(
            should_stop=lambda: self._cancelled(job.job_id), progress=status, status=status
        )

    def _report(self, job: Job, status: TaskStatus, **fields: object) -> None:
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
        # Sent at once; the job's offset is committed only after the producer is flushed.
        self._producer.send(self._spec.reports, str(job.task_id), report)


def _provider(job: Job) -> str:
    return getattr(job, "provider_type", None) or "local"


def _call(executor: Executor, job: Job, ctx: JobContext) -> dict | BaseException:
    try:
        return executor(job, ctx)
    except Exception as exc:  # noqa: BLE001 - classified by the caller
        return exc


def local_executors(settings: Settings, kind: WorkerKind) -> dict[str, Executor]:
    """The model-backed executor of an inference or training worker, as provider `local`."""
    from gpu.images import FetchPolicy
    from gpu.models import ModelRegistry
    from state.storage import storage_from_settings

    registry = ModelRegistry(
        settings.models_root(), default=settings.default_model, strict=settings.strict_models
    )
    storage = storage_from_settings(settings.storage_root(), settings.storage_url)
    fetch = FetchPolicy(allow_private=settings.allow_private_image_urls)
    if kind == WorkerKind.TRAINING:
        from gpu.training.executor import TrainingExecutor

        return {"local": TrainingExecutor(registry, storage, fetch)}
    from gpu.executors.diffusion import DiffusionExecutor

    return {
        "local": DiffusionExecutor(registry, storage, fetch, max_pixels=settings.worker_max_pixels)
    }


def create_worker(
    settings: Settings, kind: WorkerKind, executors: dict[str, Executor] | None = None
) -> MemberProcess:
    spec = SPECS[kind]
    if executors is None:
        executors = {**DEFAULT_EXECUTORS, **local_executors(settings, kind)}
    bootstrap = settings.require_bootstrap()
    # whichever service starts first creates them (docker-compose)
    ensure_topics(bootstrap, settings.queue_routing().every_topic())
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
        backoff_s=settings.retry_backoff_s,
    )
    max_batch = settings.worker_max_batch if kind == WorkerKind.INFERENCE else 1
    served = settings.served_queues(kind)
    consumer = JobConsumer(
        bootstrap,
        lanes(spec.group, kind, served),
        serde,
        runner,
        producer,
        settings.kafka_session_timeout_ms,
        # Jobs come after every API answer: a job may start a fetch wait later, and an idle
        # worker spares the embedded broker a fetch every 20 ms (ADR 6).
        settings.kafka_watch_fetch_wait_ms,
        max_batch=max_batch,
    )
    return MemberProcess(
        role=spec.role,
        worker_id=worker_id,
        producer=producer,
        consumers=[consumer],
        interval_s=settings.heartbeat_interval_s,
        queues=served,
        status=lambda: {
            "completed_count": runner.completed,
            "active_task_ids": sorted(str(t) for t in runner.active),
            "reserved_by_queue": consumer.reserved(),
            "concurrency": max_batch,
        },
        on_close=[watch.stop, registry.close],
    )
