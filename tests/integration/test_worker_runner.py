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


def test_jobs_are_reported_completed_or_failed_with_a_reason(bootstrap, db):
    serde = AvroSerde(RegistryStore(db), load_catalog())
    jobs, reports = fresh_topic(bootstrap, "jobs"), fresh_topic(bootstrap, "reports")
    producer = RecordProducer(bootstrap, serde)
    ok, unknown = _job("echo"), _job("nonexistent")
    for job in (ok, unknown):
        producer.send(jobs, str(job.task_id), job)
    producer.flush()

    runner = JobRunner(
        WorkerSpec(WorkerRole.INFERENCE, "g", jobs, reports),
        "w-1",
        producer,
        {"echo": lambda job: {"echoed": json.loads(job.payload_json)["prompt"]}},
    )
    stop = threading.Event()
    consumer = RecordConsumer(bootstrap, f"test-{uuid.uuid4()}", [jobs], serde, runner, producer)
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    messages = read_topic(bootstrap, reports.name, 2, timeout=60)
    stop.set()
    thread.join(30)

    done, failed = (serde.deserialize(m.value()) for m in messages)
    assert (done.task_id, done.status, done.progress, json.loads(done.result_json)) == (
        ok.task_id,
        TaskStatus.COMPLETED,
        100.0,
        {"echoed": "hi"},
    )
    assert (failed.task_id, failed.status, failed.error_category) == (
        unknown.task_id,
        TaskStatus.FAILED,
        ErrorCategory.PROVIDER,
    )
    assert "no executor for provider 'nonexistent'" in failed.error_message
    assert [m.key().decode() for m in messages] == [str(ok.task_id), str(unknown.task_id)]
    assert runner.completed == 1
