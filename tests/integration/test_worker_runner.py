"""A worker runs each job on its provider's executor and reports the outcome on Kafka."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime

from gpu.worker import JobRunner, WorkerSpec
from state.registry_store import RegistryStore
from streams.consumer import RecordConsumer
from streams.producer import RecordProducer
from streams.records import ErrorCategory, InferenceJob, TaskStatus, WorkerRole
from streams.schemas import load_catalog
from streams.serde import AvroSerde
from tests.integration.kafka_helpers import fresh_topic, read_topic


def _job(provider: str | None) -> InferenceJob:
    return InferenceJob(
        job_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        task_type="GENERATION",
        provider_type=provider,
        payload_json='{"prompt": "hi"}',
        enqueued_at=datetime.now(UTC),
    )


def _bad_input(job, ctx):
    raise ValueError("width must be a multiple of 8")


def _crash(job, ctx):
    raise MemoryError("CUDA out of memory")


def test_jobs_are_reported_with_their_outcome_and_failure_class(bootstrap, db):
    serde = AvroSerde(RegistryStore(db), load_catalog())
    jobs, reports = fresh_topic(bootstrap, "jobs"), fresh_topic(bootstrap, "reports")
    producer = RecordProducer(bootstrap, serde)
    ok, unknown, invalid, crashed = _job("echoish"), _job("nonexistent"), _job("bad"), _job("oom")
    for job in (ok, unknown, invalid, crashed):
        producer.send(jobs, str(job.task_id), job)
    producer.flush()

    executors = {
        "echoish": lambda job, ctx: {"echoed": json.loads(job.payload_json)["prompt"]},
        "bad": _bad_input,
        "oom": _crash,
    }
    runner = JobRunner(
        WorkerSpec(WorkerRole.INFERENCE, "g", jobs, reports), "w-1", producer, executors
    )
    stop = threading.Event()
    consumer = RecordConsumer(bootstrap, f"test-{uuid.uuid4()}", [jobs], serde, runner, producer)
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    messages = read_topic(bootstrap, reports.name, 7, timeout=60)
    stop.set()
    thread.join(30)
    producer.close()

    got = [serde.deserialize(m.value()) for m in messages]
    by_task = {}
    for report in got:
        by_task.setdefault(report.task_id, []).append(report)
    assert [r.status for r in by_task[ok.task_id]] == [TaskStatus.EXECUTING, TaskStatus.COMPLETED]
    assert json.loads(by_task[ok.task_id][1].result_json) == {"echoed": "hi"}
    [no_executor] = by_task[unknown.task_id]
    assert (no_executor.status, no_executor.error_category, no_executor.retryable) == (
        TaskStatus.FAILED,
        ErrorCategory.PROVIDER,
        False,
    )
    assert "no executor for provider 'nonexistent'" in no_executor.error_message
    invalid_failed = by_task[invalid.task_id][-1]
    assert (invalid_failed.error_category, invalid_failed.retryable) == (
        ErrorCategory.VALIDATION,
        False,
    )
    assert invalid_failed.error_message == "width must be a multiple of 8"
    crashed_failed = by_task[crashed.task_id][-1]
    assert (crashed_failed.error_category, crashed_failed.retryable) == (
        ErrorCategory.TRANSIENT,
        True,
    )
    assert all(m.key().decode() == str(r.task_id) for m, r in zip(messages, got, strict=True))
    assert runner.completed == 1
