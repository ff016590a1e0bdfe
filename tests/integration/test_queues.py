"""Queues end to end (F2, ADR 11): a task naming a declared queue goes to that queue's job
topic and is run by a worker serving it, not by the default queue's worker; a queue nobody
declared is refused, through the API and from Kafka."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from streams.producer import RecordProducer
from streams.records import CreateTask, InferenceJob, WorkerReport
from streams.registry import HttpSchemaRegistry
from streams.schemas import load_catalog
from streams.serde import AvroSerde
from tests.conftest import new_database
from tests.integration.conftest import run_members, serve_api, settings_for, wait_status
from tests.integration.kafka_helpers import read_topic


@pytest.fixture(scope="module")
def stack(infra, bootstrap):
    """The API, the processors, a worker of the default inference queue and one of `hires`."""
    workers = [
        ("inference", {"worker_id": "w-default"}),
        ("inference", {"worker_id": "w-hires", "worker_queues": ("hires",)}),
    ]
    with (
        new_database(infra) as url,
        serve_api(settings_for(bootstrap, url, queues=("hires",))) as api,
        run_members(api, workers),
    ):
        yield api, url


@pytest.fixture
def database_url(stack):
    """The stack's database, where `user_token` is stored."""
    return stack[1]


def echo_task(**extra) -> dict:
    return {"task_type": "GENERATION", "prompt": "a blue square", "provider_type": "echo", **extra}


def test_a_task_runs_on_the_queue_it_names(stack, bootstrap, serde):
    api, _ = stack
    status, routed = api.call(
        "POST", "/api/v1/tasks/", echo_task(queue_name="hires"), api.admin_token
    )
    assert status == 200, routed
    status, plain = api.call("POST", "/api/v1/tasks/", echo_task(), api.admin_token)
    assert status == 200, plain
    for task in (routed, plain):
        wait_status(api, task["id"], {"COMPLETED"})

    # the routed task's job went to the queue's topic, and only there
    [job] = [serde.deserialize(m.value()) for m in read_topic(bootstrap, "inference.hires.jobs", 2)]
    assert isinstance(job, InferenceJob) and (str(job.task_id), job.queue) == (
        routed["id"],
        "hires",
    )
    default = [serde.deserialize(m.value()) for m in read_topic(bootstrap, "inference.jobs", 2)]
    assert [(str(j.task_id), j.queue) for j in default] == [(plain["id"], "inference")]

    # each was run by the worker of its queue
    runs: dict[str, set[str]] = {}
    for message in read_topic(bootstrap, "inference.status", 4):
        report = serde.deserialize(message.value())
        assert isinstance(report, WorkerReport)
        runs.setdefault(str(report.task_id), set()).add(report.worker_id)
    assert runs == {routed["id"]: {"w-hires"}, plain["id"]: {"w-default"}}

    status, detail = api.call(
        "GET", f"/api/v1/monitoring/tasks/{routed['id']}", token=api.admin_token
    )
    assert status == 200 and detail["queue_name"] == "hires"
    status, detail = api.call(
        "GET", f"/api/v1/monitoring/tasks/{plain['id']}", token=api.admin_token
    )
    assert status == 200 and detail["queue_name"] == "inference"


def test_a_queue_that_is_not_declared_is_refused(stack):
    api, _ = stack
    status, body = api.call(
        "POST", "/api/v1/tasks/", echo_task(queue_name="gpu-xl"), api.admin_token
    )
    assert status == 422, body
    [error] = body["detail"]
    assert error["loc"] == ["body", "GENERATION", "queue_name"]
    assert error["msg"] == "unknown queue 'gpu-xl'; known inference queues: 'inference', 'hires'"
    status, body = api.call(
        "POST", "/api/v1/tasks/", echo_task(queue_name="training"), api.admin_token
    )
    assert status == 422 and "takes training work, not inference" in body["detail"][0]["msg"]

    # of the seed's update bodies, the LLM interaction's (the "worker" update) has queue_name
    llm = echo_task(task_type="LLM_INTERACTION", provider_config={"delay_ms": 60_000})
    status, task = api.call("POST", "/api/v1/tasks/", llm, api.admin_token)
    assert status == 200, task
    path = f"/api/v1/tasks/{task['id']}"
    status, body = api.call("PUT", path, {"queue_name": "gpu-xl"}, api.admin_token)
    assert status == 422 and body["detail"][0]["loc"] == ["body", "queue_name"], body
    status, body = api.call("PUT", path, {"queue_name": "hires"}, api.admin_token)
    assert status == 200, body
    status, detail = api.call(
        "GET", f"/api/v1/monitoring/tasks/{task['id']}", token=api.admin_token
    )
    assert status == 200 and detail["queue_name"] == "hires"
    assert api.call("POST", f"{path}/cancel", token=api.admin_token)[0] == 200


def test_a_kafka_create_naming_an_unknown_queue_is_rejected_with_the_reason(
    stack, bootstrap, serde
):
    _, url = stack
    command = CreateTask(
        command_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        issued_at=datetime.now(UTC),
        task_type="GENERATION",
        payload_json='{"prompt": "p", "queue_name": "gpu-xl"}',
    )
    producer = RecordProducer(bootstrap, serde)
    producer.send("tasks.commands", str(command.task_id), command)
    producer.flush()
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as conn:
        while (row := outcome_of(conn, command.command_id)) is None:
            assert time.monotonic() < deadline, "the command was never decided"
            time.sleep(0.1)
        tasks = conn.execute("SELECT count(*) FROM tasks WHERE id = %s", (command.task_id,))
        assert tasks.fetchone()[0] == 0
    assert row == (
        "REJECTED",
        422,
        "queue_name: unknown queue 'gpu-xl'; known inference queues: 'inference', 'hires'",
    )


@pytest.fixture
def serde(stack) -> Iterator[AvroSerde]:
    api, _ = stack
    registry = HttpSchemaRegistry(api.url + "/schema-registry", f"admin:{api.admin_token}")
    yield AvroSerde(registry, load_catalog())
    registry.close()


def outcome_of(conn: psycopg.Connection, command_id: uuid.UUID) -> tuple | None:
    return conn.execute(
        "SELECT outcome, status_code, reason FROM command_outcomes WHERE command_id = %s",
        (command_id,),
    ).fetchone()


def test_queue_stats_show_each_queues_tasks_and_workers(stack, user_token):
    """F89, F167: per queue, the tasks waiting, held by its workers and running, its live
    workers, and the last hour's completions (the tests above completed some)."""
    api, _ = stack
    # three jobs of 2 s on `hires`, whose one worker runs one at a time and holds the others
    slow = echo_task(queue_name="hires", provider_config={"delay_ms": 2_000})
    ids = [api.call("POST", "/api/v1/tasks/", slow, api.admin_token)[1]["id"] for _ in range(3)]
    deadline = time.monotonic() + 30
    while True:
        status, body = api.call("GET", "/api/v1/monitoring/queues", token=api.admin_token)
        assert status == 200, body
        queues = {q["name"]: q for q in body["queues"]}
        hires = queues["hires"]
        if (hires["active_tasks"], hires["reserved_tasks"]) == (
            1,
            2,
        ) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert list(queues) == ["inference", "training", "hires"]
    assert hires["active_tasks"] == 1 and hires["reserved_tasks"] == 2 and hires["depth"] == 0
    assert (hires["active_workers"], queues["inference"]["active_workers"]) == (1, 1)
    assert queues["training"]["active_workers"] == 0  # this stack runs no training worker
    assert hires["tasks_completed_last_hour"] >= 1 and hires["avg_wait_time_ms"] >= 0
    assert queues["inference"]["tasks_completed_last_hour"] >= 1
    assert body["total_active"] == 1 and body["total_pending"] == 0
    for task_id in ids:
        api.call("POST", f"/api/v1/tasks/{task_id}/cancel", token=api.admin_token)
    # the counts span tenants: for the operator only
    status, body = api.call("GET", "/api/v1/monitoring/queues", token=user_token)
    assert status == 403, body
