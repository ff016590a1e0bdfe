"""A worker runs each job on its provider's executor and reports the outcome on Kafka."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition

from gpu.runtime import JobConsumer
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
    runner = JobRunner(WorkerSpec(WorkerRole.INFERENCE, "g", reports), "w-1", producer, executors)
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


class BatchingExecutor:
    """Records each call's jobs; `slow` jobs hold the runner so the rest queue up."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _prompt(self, job) -> str:
        return json.loads(job.payload_json)["prompt"]

    def batch_key(self, job):
        prompt = self._prompt(job)
        return None if prompt == "slow" else prompt[0]  # 'a…' and 'b…' batch apart

    def __call__(self, job, ctx):
        return self.run_batch([job], [ctx])[0]

    def run_batch(self, jobs, ctxs):
        prompts = [self._prompt(j) for j in jobs]
        self.calls.append(prompts)
        if "slow" in prompts:
            time.sleep(1.5)
        return [{"prompt": p, "batch": len(jobs)} for p in prompts]


def _prompted(prompt: str) -> InferenceJob:
    job = _job("batching")
    return job.model_copy(update={"payload_json": json.dumps({"prompt": prompt})})


@dataclass
class Consumed:
    executor: BatchingExecutor
    consumer: JobConsumer
    reports: list  # decoded WorkerReports
    committed: int  # the group's committed offset on the job topic


def consume_jobs(bootstrap: str, db, queued: list[InferenceJob], **options) -> Consumed:
    """Produce `queued` to a fresh one-partition job topic, run a JobConsumer with a
    BatchingExecutor until every job is reported twice (EXECUTING, COMPLETED), then stop."""
    serde = AvroSerde(RegistryStore(db), load_catalog())
    jobs, reports = fresh_topic(bootstrap, "jobs"), fresh_topic(bootstrap, "reports")
    producer = RecordProducer(bootstrap, serde)
    for job in queued:
        producer.send(jobs, "same-key", job)
    producer.flush()
    executor = BatchingExecutor()
    runner = JobRunner(
        WorkerSpec(WorkerRole.INFERENCE, "g", reports),
        "w-1",
        producer,
        {"batching": executor},
    )
    group = f"test-{uuid.uuid4()}"
    stop = threading.Event()
    consumer = JobConsumer(bootstrap, [(group, jobs)], serde, runner, producer, **options)
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    messages = read_topic(bootstrap, reports.name, 2 * len(queued), timeout=60)
    stop.set()
    thread.join(30)
    producer.close()
    decoded = [serde.deserialize(m.value()) for m in messages]
    return Consumed(executor, consumer, decoded, committed_offset(bootstrap, group, jobs.name))


def committed_offset(bootstrap: str, group: str, topic: str) -> int:
    """The offset `group` committed on partition 0 of `topic`."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [committed] = probe.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        probe.close()
    return committed.offset


def test_jobs_run_off_the_poll_loop_in_batches_and_commit_after_their_reports(bootstrap, db):
    queued = [_prompted("slow"), *(_prompted(f"a{i}") for i in range(6))]
    queued += [_prompted("b0"), _prompted("b1")]
    run = consume_jobs(bootstrap, db, queued, max_batch=4, max_queued=8)

    assert run.executor.calls == [["slow"], ["a0", "a1", "a2", "a3"], ["a4", "a5"], ["b0", "b1"]]
    completed = [r for r in run.reports if r.status == TaskStatus.COMPLETED]
    assert sorted(str(r.task_id) for r in completed) == sorted(str(j.task_id) for j in queued)
    # every job's offset was committed once its reports were acknowledged
    assert run.committed == len(queued)


def test_a_long_stall_pauses_and_resumes_without_losing_or_repeating_a_job(bootstrap, db):
    queued = [_prompted("slow"), *(_prompted(f"a{i}") for i in range(7))]
    run = consume_jobs(bootstrap, db, queued, max_queued=2, pause_after_s=0.2)

    assert [p for call in run.executor.calls for p in call] == [
        "slow",
        *(f"a{i}" for i in range(7)),
    ]  # each once, in order, although the slow job held the queue full past pause_after_s
    assert run.consumer.pauses >= 1
    assert sum(r.status == TaskStatus.COMPLETED for r in run.reports) == len(queued)
    assert run.committed == len(queued)


def test_a_priority_job_passes_a_full_lane_and_runs_first(bootstrap, db):
    """The jobs of tasks with priority > 0 come by a lane of their own: while the main lane
    is full (max_queued jobs wait, the rest stay in Kafka) the priority lane still takes
    its jobs, and the runner takes the highest priority next, the oldest among equals."""
    serde = AvroSerde(RegistryStore(db), load_catalog())
    jobs, urgent = fresh_topic(bootstrap, "jobs"), fresh_topic(bootstrap, "urgent")
    reports = fresh_topic(bootstrap, "reports")
    producer = RecordProducer(bootstrap, serde)
    executor = BatchingExecutor()
    runner = JobRunner(
        WorkerSpec(WorkerRole.INFERENCE, "g", reports),
        "w-1",
        producer,
        {"batching": executor},
    )
    group = f"test-{uuid.uuid4()}"
    consumer = JobConsumer(
        bootstrap,
        [(group, jobs), (f"{group}.priority", urgent)],
        serde,
        runner,
        producer,
        max_queued=2,
    )
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    assert consumer.joined.wait(30)

    def prioritised(prompt: str, priority: int) -> InferenceJob:
        return _prompted(prompt).model_copy(update={"priority": priority})

    normal = [
        prioritised("slow", 0),
        prioritised("z", -1),
        *(prioritised(f"a{i}", 0) for i in range(4)),
    ]
    for job in normal:
        producer.send(jobs, "same-key", job)
    producer.flush()
    time.sleep(0.5)  # slow runs; z and a0 fill the lane; a1-a3 wait in Kafka
    producer.send(urgent, "k", prioritised("p", 5))
    producer.flush()
    messages = read_topic(bootstrap, reports.name, 2 * (len(normal) + 1), timeout=60)
    stop.set()
    thread.join(30)
    producer.close()

    ran = [p for call in executor.calls for p in call]
    assert ran[:3] == ["slow", "p", "a0"]  # p passed z, a0 and a1-a3; a0 (0) passed z (-1)
    assert sorted(ran) == sorted(["slow", "p", "z", "a0", "a1", "a2", "a3"])
    assert len(messages) == 2 * len(ran)
    assert committed_offset(bootstrap, group, jobs.name) == len(normal)
    assert committed_offset(bootstrap, f"{group}.priority", urgent.name) == 1
