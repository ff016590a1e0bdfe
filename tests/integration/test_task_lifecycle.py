"""Tasks end to end: HTTP API -> tasks.commands -> task processor -> inference worker (echo)
-> processor -> Postgres, asserting on responses, rows and the events on tasks.events."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from openapi_spec_validator import validate

from api.tasks import _IDEMPOTENCY_NAMESPACE
from processors.task_machine import MAX_RETRIES, job_id
from streams.records import (
    TASK_BODY_MAX_BYTES,
    CreateTask,
    JobCancelled,
    TaskCreatedEvent,
    TaskStatusEvent,
    WorkerReport,
)
from streams.registry import HttpSchemaRegistry
from streams.schemas import load_catalog
from streams.serde import AvroSerde
from tests.conftest import new_database
from tests.integration.conftest import run_members, serve_api, settings_for, wait_status
from tests.integration.kafka_helpers import read_topic


@pytest.fixture(scope="module")
def stack(infra, bootstrap):
    """One database, API and set of members for the whole module (a group join is seconds)."""
    with (
        new_database(infra) as url,
        serve_api(settings_for(bootstrap, url)) as api,
        run_members(api),
    ):
        yield api, url


@pytest.fixture
def running_api(stack):
    return stack[0]


@pytest.fixture
def database_url(stack):
    return stack[1]


def echo_task(**extra) -> dict:
    return {"task_type": "GENERATION", "prompt": "a blue square", "provider_type": "echo", **extra}


def test_a_generation_task_runs_to_completed(running_api, database_url):
    api = running_api
    status, created = api.call(
        "POST", "/api/v1/tasks/", echo_task(width=64, height=64, seed=7), api.admin_token
    )
    assert status == 200, created
    assert created["status"] == "PENDING" and created["task_type"] == "GENERATION"
    assert (created["prompt"], created["width"], created["seed"]) == ("a blue square", 64, 7)
    done = wait_status(api, created["id"], {"COMPLETED"})
    assert done["progress"] == 100.0 and done["executor_type"] == "echo"
    # the create's answer (from the row its outcome brought along) reads as a GET does
    stable = ("id", "created_at", "task_type", "prompt", "width", "seed", "origin_instance")
    assert {k: created[k] for k in stable} == {k: done[k] for k in stable}
    assert done["started_at"] and done["completed_at"] and done["retry_count"] == 0
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT status, version, fields->>'service_task_id' FROM tasks WHERE id = %s",
            (created["id"],),
        ).fetchone()
    assert row[0] == "COMPLETED" and row[1] == 3 and row[2].startswith("echo-")
    # and the same task through the generation routes
    assert (
        api.call("GET", f"/api/v1/tasks/generation/{created['id']}", token=api.admin_token)[1]["id"]
        == created["id"]
    )


def test_events_on_tasks_events_follow_the_lifecycle(running_api, bootstrap):
    api = running_api
    _, created = api.call("POST", "/api/v1/tasks/", echo_task(), api.admin_token)
    wait_status(api, created["id"], {"COMPLETED"})
    registry = HttpSchemaRegistry(api.url + "/schema-registry", f"admin:{api.admin_token}")
    serde = AvroSerde(registry, load_catalog())
    deadline = time.monotonic() + 30
    mine: list = []
    while (
        time.monotonic() < deadline and len([e for e in mine if isinstance(e, TaskStatusEvent)]) < 2
    ):
        messages = read_topic(bootstrap, "tasks.events", 10_000, timeout=3)
        mine = [serde.deserialize(m.value()) for m in messages if m.key().decode() == created["id"]]
    registry.close()
    lifecycle = [e for e in mine if isinstance(e, TaskCreatedEvent | TaskStatusEvent)]
    assert [(type(e).__name__, str(e.status)) for e in lifecycle] == [
        ("TaskCreatedEvent", "PENDING"),
        ("TaskStatusEvent", "EXECUTING"),
        ("TaskStatusEvent", "COMPLETED"),
    ]
    assert lifecycle[-1].progress == 100.0 and lifecycle[-1].completed_at is not None


def test_bad_bodies_get_422_with_locations(running_api):
    api = running_api
    status, body = api.call(
        "POST", "/api/v1/tasks/", {"task_type": "GENERATION", "width": -5}, api.admin_token
    )
    assert status == 422
    locs = {tuple(d["loc"]) for d in body["detail"]}
    assert ("body", "GENERATION", "prompt") in locs and ("body", "GENERATION", "width") in locs
    status, body = api.call("POST", "/api/v1/tasks/", {"task_type": "NOPE"}, api.admin_token)
    assert status == 422 and body["detail"][0]["loc"] == ["body", "task_type"]
    status, body = api.call("POST", "/api/v1/tasks/", raw=b"{not json", token=api.admin_token)
    assert status == 422 and body["detail"][0]["type"] == "json_invalid"
    assert api.call("GET", "/api/v1/tasks/not-a-uuid", token=api.admin_token)[0] == 422
    assert api.call("GET", f"/api/v1/tasks/{uuid.uuid4()}", token=api.admin_token)[0] == 404
    assert api.call("GET", "/api/v1/tasks/?limit=5000", token=api.admin_token)[0] == 422


@pytest.mark.parametrize("route", ["DELETE {}", "POST {}/cleanup"])
def test_deleting_a_running_task_stops_its_job(running_api, route):
    api = running_api
    _, created = api.call(
        "POST", "/api/v1/tasks/", echo_task(provider_config={"delay_ms": 30_000}), api.admin_token
    )
    wait_status(api, created["id"], {"EXECUTING"})
    method, path = route.format(f"/api/v1/tasks/{created['id']}").split(" ")
    status, body = api.call(method, path, token=api.admin_token)
    assert status == 200, body
    # the worker was busy with a 30 s job; a new task done in seconds shows that job stopped
    # (it used to run on, and store its files after the delete had removed them)
    started = time.monotonic()
    _, quick = api.call("POST", "/api/v1/tasks/", echo_task(), api.admin_token)
    wait_status(api, quick["id"], {"COMPLETED"}, timeout=10)
    assert time.monotonic() - started < 5
    if method == "POST":  # cleanup keeps the record, which says what became of the task
        assert body["status"] == "CANCELLED" and body["completed_at"]
    else:
        assert api.call("GET", f"/api/v1/tasks/{created['id']}", token=api.admin_token)[0] == 404


def test_cancel_running_stops_the_job_and_a_second_cancel_conflicts(running_api, bootstrap):
    api = running_api
    long = echo_task(provider_config={"delay_ms": 30_000})
    _, created = api.call("POST", "/api/v1/tasks/", long, api.admin_token)
    wait_status(api, created["id"], {"EXECUTING"})
    status, cancelled = api.call(
        "POST", f"/api/v1/tasks/{created['id']}/cancel", token=api.admin_token
    )
    assert status == 200 and cancelled["status"] == "CANCELLED" and cancelled["completed_at"]
    status, body = api.call("POST", f"/api/v1/tasks/{created['id']}/cancel", token=api.admin_token)
    assert status == 409 and "cannot cancel a CANCELLED task" in body["detail"]
    # The single worker was busy with a 30 s job: a new task completing within a few seconds
    # shows the cancelled job really stopped.
    started = time.monotonic()
    _, quick = api.call("POST", "/api/v1/tasks/", echo_task(), api.admin_token)
    wait_status(api, quick["id"], {"COMPLETED"}, timeout=10)
    assert time.monotonic() - started < 5
    assert wait_status(api, created["id"], {"CANCELLED"})["status"] == "CANCELLED"
    # what the worker's watch read: the job to stop, not the task's events
    registry = HttpSchemaRegistry(api.url + "/schema-registry", f"admin:{api.admin_token}")
    serde = AvroSerde(registry, load_catalog())
    watched = [
        serde.deserialize(m.value())
        for m in read_topic(bootstrap, "tasks.cancellations", 1000, timeout=3)
        if m.key().decode() == created["id"]
    ]
    registry.close()
    task_id = uuid.UUID(created["id"])
    assert [(type(e), e.job_id, e.attempt) for e in watched] == [
        (JobCancelled, job_id(task_id, 1), 1)
    ]


def test_a_cancelled_task_put_back_to_pending_runs_again(running_api):
    """The cancellation stops the job of the attempt it ended, not the task: the retry's
    job runs (the workers once skipped every later job of a cancelled task, and the task
    stayed PENDING for good)."""
    api = running_api
    _, created = api.call(
        "POST", "/api/v1/tasks/", echo_task(provider_config={"delay_ms": 2_000}), api.admin_token
    )
    wait_status(api, created["id"], {"EXECUTING"})
    status, _ = api.call("POST", f"/api/v1/tasks/{created['id']}/cancel", token=api.admin_token)
    assert status == 200
    status, requeued = api.call(
        "PUT", f"/api/v1/tasks/{created['id']}", {"status": "PENDING"}, api.admin_token
    )
    assert status == 200 and requeued["status"] in {"PENDING", "EXECUTING"}
    assert requeued["retry_count"] == 1 and requeued["completed_at"] is None
    done = wait_status(api, created["id"], {"COMPLETED"}, timeout=20)
    assert done["retry_count"] == 1 and done["progress"] == 100.0


def test_failures_are_retried_then_failed_with_the_reason(running_api):
    api = running_api
    _, created = api.call(
        "POST", "/api/v1/tasks/", echo_task(provider_config={"fail": True}), api.admin_token
    )
    failed = wait_status(api, created["id"], {"FAILED"})
    assert failed["retry_count"] == MAX_RETRIES and failed["error_category"] == "TRANSIENT"
    assert "echo failure requested" in failed["errors"][0]


def test_idempotency_key(running_api):
    api = running_api
    headers = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    s1, first = api.call(
        "POST", "/api/v1/tasks/", echo_task(seed=1), api.admin_token, headers=headers
    )
    s2, again = api.call(
        "POST", "/api/v1/tasks/", echo_task(seed=1), api.admin_token, headers=headers
    )
    assert (s1, s2) == (200, 200) and first["id"] == again["id"]
    s3, body = api.call(
        "POST", "/api/v1/tasks/", echo_task(seed=2), api.admin_token, headers=headers
    )
    assert s3 == 409 and "different body" in body["detail"]


def test_a_create_checks_postgres_for_tasks_its_processor_has_not_seen(running_api, database_url):
    """The processor decides creates of ids it has not seen as new without reading them; a
    task some earlier owner wrote (here: put in Postgres directly) must still be found."""
    api = running_api
    first_key, second_key = f"order-{uuid.uuid4()}", f"order-{uuid.uuid4()}"
    status, created = api.call(
        "POST", "/api/v1/tasks/", echo_task(seed=3), api.admin_token,
        headers={"Idempotency-Key": first_key},
    )  # fmt: skip
    assert status == 200
    wait_status(api, created["id"], {"COMPLETED"})
    # the task the second key names, as an earlier owner left it: COMPLETED, same body
    earlier = uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"None\0{second_key}")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO tasks (id, task_type, status, version, priority, provider_type,"
            " progress, created_at, updated_at, completed_at, idempotency_key, payload_json,"
            " fields)"
            " SELECT %s, task_type, 'COMPLETED', 9, priority, provider_type, 100, created_at,"
            " updated_at, updated_at, %s, payload_json, fields FROM tasks WHERE id = %s",
            (earlier, second_key, created["id"]),
        )
    status, again = api.call(
        "POST", "/api/v1/tasks/", echo_task(seed=3), api.admin_token,
        headers={"Idempotency-Key": second_key},
    )  # fmt: skip
    assert (status, again["id"], again["status"]) == (200, str(earlier), "COMPLETED")
    status, body = api.call(
        "POST", "/api/v1/tasks/", echo_task(seed=4), api.admin_token,
        headers={"Idempotency-Key": second_key},
    )  # fmt: skip
    assert status == 409 and "different body" in body["detail"]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status, version FROM tasks WHERE id = %s", (earlier,)).fetchone()
    assert row == ("COMPLETED", 9)  # never overwritten as a new task


def test_a_task_with_priority_runs_before_a_backlog_created_before_it(running_api):
    """F9: higher priority is dequeued first. Its job takes the priority lane past the
    backlog of inference.jobs, and the worker runs it as soon as the job running ends."""
    api = running_api
    instance = f"prio-{uuid.uuid4().hex[:6]}"
    backlog = [
        api.call(
            "POST",
            "/api/v1/tasks/",
            echo_task(origin_instance=instance, provider_config={"delay_ms": 250}),
            api.admin_token,
        )[1]["id"]
        for _ in range(12)
    ]
    _, urgent = api.call(
        "POST",
        "/api/v1/tasks/",
        echo_task(origin_instance=instance, priority=3, provider_config={"delay_ms": 250}),
        api.admin_token,
    )
    first = wait_status(api, urgent["id"], {"COMPLETED"})
    for task_id in backlog:
        wait_status(api, task_id, {"COMPLETED"})
    started = [
        api.call("GET", f"/api/v1/tasks/{t}", token=api.admin_token)[1]["started_at"]
        for t in backlog
    ]
    # the job running when it came, and the one the worker may have taken meanwhile
    assert sum(s < first["started_at"] for s in started) <= 2, (first["started_at"], started)


def test_tenants_see_only_their_own_tasks(running_api):
    api = running_api
    acme = api.call("POST", "/api/v1/admin/tokens", {"tenant": "acme"}, api.admin_token)[1]["token"]
    globex = api.call("POST", "/api/v1/admin/tokens", {"tenant": "globex"}, api.admin_token)[1][
        "token"
    ]
    assert api.call("POST", "/api/v1/admin/tokens", {"tenant": "x"}, acme)[0] == 403
    status, task = api.call("POST", "/api/v1/tasks/", echo_task(), acme)
    assert status == 200 and task["origin_tenant_id"] == "acme"
    assert api.call("GET", f"/api/v1/tasks/{task['id']}", token=globex)[0] == 404
    assert api.call("POST", f"/api/v1/tasks/{task['id']}/cancel", token=globex)[0] == 404
    assert api.call("POST", "/api/v1/tasks/", echo_task(origin_tenant_id="globex"), acme)[0] == 403
    assert task["id"] in {t["id"] for t in api.call("GET", "/api/v1/tasks/", token=acme)[1]}
    assert task["id"] not in {t["id"] for t in api.call("GET", "/api/v1/tasks/", token=globex)[1]}


@pytest.mark.parametrize(
    ("task_type", "route"),
    [("GENERATION", "/api/v1/tasks/generation/{}"), ("LLM_INTERACTION", "/api/v1/tasks/{}")],
)
def test_an_update_cannot_move_a_task_to_another_tenant(running_api, task_type, route):
    """The seed's worker updates carry origin_tenant_id: a change of tenant is refused (it
    was answered 200 and silently ignored), restating the tenant is fine."""
    api = running_api
    acme = api.call("POST", "/api/v1/admin/tokens", {"tenant": "acme"}, api.admin_token)[1]["token"]
    _, task = api.call("POST", "/api/v1/tasks/", echo_task(task_type=task_type), acme)
    for token in (acme, api.admin_token):
        status, body = api.call("PUT", route.format(task["id"]), {"origin_tenant_id": "x"}, token)
        assert status == 422, body
        assert body["detail"][0]["loc"] == ["body", "origin_tenant_id"]
        assert "stays with the tenant that created it ('acme')" in body["detail"][0]["msg"]
    status, body = api.call(
        "PUT", route.format(task["id"]), {"origin_tenant_id": "acme", "priority": 4}, acme
    )
    assert status == 200 and (body["origin_tenant_id"], body["priority"]) == ("acme", 4)


def test_list_filters_and_newest_first(running_api):
    api = running_api
    ids = [
        api.call("POST", "/api/v1/tasks/", echo_task(origin_zone="eu"), api.admin_token)[1]["id"]
        for _ in range(3)
    ]
    status, listed = api.call("GET", "/api/v1/tasks/?origin_zone=eu&limit=2", token=api.admin_token)
    assert status == 200 and [t["id"] for t in listed] == ids[::-1][:2]
    _, page2 = api.call(
        "GET", "/api/v1/tasks/?origin_zone=eu&limit=2&skip=2", token=api.admin_token
    )
    assert [t["id"] for t in page2] == ids[:1]


def test_update_cleanup_and_delete(running_api):
    api = running_api
    _, task = api.call("POST", "/api/v1/tasks/", echo_task(), api.admin_token)
    status, updated = api.call(
        "PUT",
        f"/api/v1/tasks/{task['id']}",
        {"priority": 7, "executor_instance": "gpu-3"},
        api.admin_token,
    )
    assert status == 200 and updated["priority"] == 7 and updated["executor_instance"] == "gpu-3"
    assert (
        api.call("PUT", f"/api/v1/tasks/{task['id']}", {"prompt": "x"}, api.admin_token)[0] == 422
    )
    for name in ("priority", "status"):  # nullable in the seed, never null on a task
        assert api.call("PUT", f"/api/v1/tasks/{task['id']}", {name: None}, api.admin_token) == (
            422,
            {
                "detail": [
                    {
                        "loc": ["body", name],
                        "msg": f"{name} cannot be null; leave it out to keep it",
                        "type": "null_value",
                    }
                ]
            },
        )
    wait_status(api, task["id"], {"COMPLETED"})
    status, cleaned = api.call("POST", f"/api/v1/tasks/{task['id']}/cleanup", token=api.admin_token)
    assert status == 200
    listed = api.call("GET", "/api/v1/tasks/?limit=1000", token=api.admin_token)[1]
    assert task["id"] not in {t["id"] for t in listed}
    listed = api.call(
        "GET", "/api/v1/tasks/?limit=1000&include_deleted=true", token=api.admin_token
    )[1]
    assert task["id"] in {t["id"] for t in listed}
    # the record is kept for audit as it was: it neither changes nor runs again
    for body in ({"status": "PENDING"}, {"priority": 1}):
        status, refused = api.call("PUT", f"/api/v1/tasks/{task['id']}", body, api.admin_token)
        assert status == 409 and "was cleaned up" in refused["detail"], refused
    status, kept = api.call("GET", f"/api/v1/tasks/{task['id']}", token=api.admin_token)
    assert kept == cleaned
    status, deleted = api.call("DELETE", f"/api/v1/tasks/{task['id']}", token=api.admin_token)
    assert status == 200 and deleted["id"] == task["id"]
    assert api.call("GET", f"/api/v1/tasks/{task['id']}", token=api.admin_token)[0] == 404


def test_task_bodies_over_the_limit_get_413_and_create_nothing(running_api):
    api = running_api
    limit = TASK_BODY_MAX_BYTES
    for n, big in enumerate(({"k": "x" * limit}, {"k": "é" * (limit // 4)})):  # é: 6 escaped
        key = f"too-big-{uuid.uuid4()}-{n}"
        status, body = api.call(
            "POST",
            "/api/v1/tasks/",
            token=api.admin_token,
            raw=json.dumps(echo_task(config=big), ensure_ascii=False).encode(),
            headers={"Idempotency-Key": key},
        )
        assert status == 413 and f"over the limit of {limit};" in body["detail"]
        task_id = uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"None\0{key}")
        assert api.call("GET", f"/api/v1/tasks/{task_id}", token=api.admin_token)[0] == 404
    # Two writes each under the limit whose task would not be: the processor refuses the second.
    half = "x" * (limit // 2)
    status, task = api.call(
        "POST", "/api/v1/tasks/", echo_task(config={"k": half}), api.admin_token
    )
    assert status == 200
    path = f"/api/v1/tasks/{task['id']}"
    status, body = api.call("PUT", path, {"errors": [half]}, api.admin_token)
    assert status == 413 and f"over the limit of {limit};" in body["detail"]
    status, now = api.call("GET", path, token=api.admin_token)
    assert status == 200 and now["errors"] is None and now["config"] == {"k": half}


def test_malformed_commands_and_reports_are_refused_and_the_processor_carries_on(
    running_api, bootstrap, database_url
):
    api = running_api
    registry = HttpSchemaRegistry(api.url + "/schema-registry", f"admin:{api.admin_token}")
    serde = AvroSerde(registry, load_catalog())
    producer = Producer({"bootstrap.servers": bootstrap})

    def create(payload_json: str) -> CreateTask:
        command = CreateTask(
            command_id=uuid.uuid4(),
            task_id=uuid.uuid4(),
            issued_at=datetime.now(UTC),
            task_type="GENERATION",
            payload_json=payload_json,
        )
        producer.produce("tasks.commands", key=str(command.task_id), value=serde.serialize(command))
        return command

    not_json, no_prompt = create("nope"), create('{"provider_type": "echo"}')
    nul = create('{"prompt": "a\\u0000b"}')  # Postgres cannot store a NUL
    report = WorkerReport(
        report_id=uuid.uuid4(),
        job_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        worker_id="rogue",
        status="COMPLETED",
        result_json="[1, 2]",
        timestamp=datetime.now(UTC),
    )
    producer.produce("inference.status", key=str(report.task_id), value=serde.serialize(report))
    producer.flush(10)
    registry.close()
    # the processors are still applying commands: the next task runs to COMPLETED
    _, task = api.call("POST", "/api/v1/tasks/", echo_task(), api.admin_token)
    wait_status(api, task["id"], {"COMPLETED"})
    with psycopg.connect(database_url) as conn:
        outcomes = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT command_id, outcome, status_code, reason FROM command_outcomes"
                " WHERE command_id = ANY(%s)",
                ([not_json.command_id, no_prompt.command_id, nul.command_id],),
            )
        }
        tasks = conn.execute(
            "SELECT count(*) FROM tasks WHERE id = ANY(%s)",
            ([not_json.task_id, no_prompt.task_id, nul.task_id],),
        ).fetchone()[0]
    assert outcomes[not_json.command_id][:2] == ("REJECTED", 422)
    assert outcomes[not_json.command_id][2].startswith("payload_json is not valid JSON")
    assert outcomes[no_prompt.command_id] == ("REJECTED", 422, "GENERATION.prompt: Field required")
    assert outcomes[nul.command_id] == (
        "REJECTED",
        422,
        "payload_json contains a NUL character (\\u0000), which cannot be stored",
    )
    assert tasks == 0
    deadline = time.monotonic() + 30
    while not (
        dead := [
            m
            for m in read_topic(bootstrap, "inference.status.dlq", 1000, timeout=2)
            if m.key() == str(report.task_id).encode()
        ]
    ):
        assert time.monotonic() < deadline, "the malformed report never reached the DLQ"
    assert dict(dead[0].headers())["dlq.error"] == b"result_json must be a JSON object, not list"


def test_a_create_task_from_an_external_avro_producer(running_api, bootstrap):
    api = running_api
    client = SchemaRegistryClient(
        {"url": api.url + "/schema-registry", "basic.auth.user.info": f"admin:{api.admin_token}"}
    )
    serializer = AvroSerializer(
        client,
        load_catalog().text("taskstream.commands.CreateTask"),
        conf={"subject.name.strategy": record_subject_name_strategy},
    )
    task_id = uuid.uuid4()
    command = {
        "command_id": uuid.uuid4(),
        "task_id": task_id,
        "issued_at": datetime.now(UTC),
        "tenant": "acme",
        "task_type": "GENERATION",
        "payload_json": json.dumps({"prompt": "from kafka", "provider_type": "echo"}),
        "priority": 0,
        "provider_type": "echo",
        "idempotency_key": None,
        "origin_instance": "batch",
        "origin_zone": None,
        "origin_version": None,
    }
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(
        "tasks.commands",
        key=str(task_id),
        value=serializer(command, SerializationContext("tasks.commands", MessageField.VALUE)),
    )
    producer.flush(10)
    client.close()
    deadline = time.monotonic() + 30
    while api.call("GET", f"/api/v1/tasks/{task_id}", token=api.admin_token)[0] != 200:
        assert time.monotonic() < deadline, "the externally produced task never appeared"
        time.sleep(0.2)
    done = wait_status(api, str(task_id), {"COMPLETED"})
    assert (done["prompt"], done["origin_tenant_id"], done["origin_instance"]) == (
        "from kafka",
        "acme",
        "batch",
    )


def test_monitoring_lists_with_totals_duration_and_search(running_api):
    api = running_api
    zone = f"z-{uuid.uuid4().hex[:6]}"
    ids = [
        api.call("POST", "/api/v1/tasks/", echo_task(origin_zone=zone), api.admin_token)[1]["id"]
        for _ in range(3)
    ]
    for task_id in ids:
        wait_status(api, task_id, {"COMPLETED"})
    status, page = api.call(
        "GET", f"/api/v1/monitoring/tasks?origin_zone={zone}&page_size=2", token=api.admin_token
    )
    assert status == 200 and (page["total"], page["pages"], page["page"], len(page["items"])) == (
        3,
        2,
        1,
        2,
    )
    assert [i["id"] for i in page["items"]] == ids[::-1][:2]
    item = page["items"][0]
    assert (
        item["duration_ms"] is not None and item["duration_ms"] >= 0 and item["has_error"] is False
    )
    _, asc = api.call(
        "GET", f"/api/v1/monitoring/tasks?origin_zone={zone}&sort_order=asc", token=api.admin_token
    )
    assert [i["id"] for i in asc["items"]] == ids
    _, found = api.call(
        "GET", f"/api/v1/monitoring/tasks?search={ids[1][:8]}", token=api.admin_token
    )
    assert ids[1] in [i["id"] for i in found["items"]]
    # the search is a plain prefix: SQL wildcards match nothing, upper case matches
    for wildcard in ("%25", "_", ids[1][:4] + "%25"):
        _, none = api.call(
            "GET", f"/api/v1/monitoring/tasks?search={wildcard}", token=api.admin_token
        )
        assert none["total"] == 0, wildcard
    _, upper = api.call(
        "GET", f"/api/v1/monitoring/tasks?search={ids[1][:8].upper()}", token=api.admin_token
    )
    assert ids[1] in [i["id"] for i in upper["items"]]
    assert (
        api.call("GET", "/api/v1/monitoring/tasks?sort_by=nonsense", token=api.admin_token)[0]
        == 422
    )
    status, detail = api.call("GET", f"/api/v1/monitoring/tasks/{ids[0]}", token=api.admin_token)
    assert (
        status == 200
        and detail["task_data"]["prompt"] == "a blue square"
        and detail["duration_ms"] >= 0
    )
    assert detail["executor_type"] == "echo" and detail["queue_name"] == "inference"


def test_openapi_is_generated_for_every_route_and_docs_render(running_api):
    api = running_api
    status, spec = api.call("GET", "/openapi.json")
    assert status == 200 and spec["openapi"] == "3.0.3"
    validate(spec)  # a document other tools accept, not just one we like
    expected = {
        "/api/v1/tasks/": {"get", "post"},
        "/api/v1/tasks/{task_id}": {"get", "put", "delete"},
        "/api/v1/tasks/{task_id}/cleanup": {"post"},
        "/api/v1/tasks/{task_id}/cancel": {"post"},
        "/api/v1/tasks/generation": {"get"},
        "/api/v1/tasks/generation/{task_id}": {"get", "put"},
        "/api/v1/tasks/generation/{task_id}/cancel": {"post"},
        "/api/v1/monitoring/tasks": {"get"},
        "/api/v1/monitoring/tasks/{task_id}": {"get"},
        "/api/v1/admin/tokens": {"get", "post"},
        "/api/v1/admin/tokens/{token_id}": {"delete"},
        "/api/v1/training/": {"get", "post"},
        "/api/v1/training/{task_id}": {"get"},
        "/api/v1/training/{task_id}/cancel": {"post"},
        "/api/v1/lora/upload": {"post"},
        "/api/v1/admin/lora/upload": {"post"},
        "/api/v1/admin/lora": {"delete"},
        "/health": {"get"},
    }
    for path, methods in expected.items():
        assert set(spec["paths"][path]) == methods, path
    create = spec["paths"]["/api/v1/tasks/"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    refs = {o["$ref"].rsplit("/", 1)[1] for o in body["oneOf"]}
    assert {"CreateGenerationTask", "CreateRefineTask", "CreateFaceEnhancerTask"} <= refs and len(
        refs
    ) == 11
    # the API requires task_type, which picks the body's shape
    assert {"prompt", "task_type"} <= set(
        spec["components"]["schemas"]["CreateGenerationTask"]["required"]
    )
    # every answer a route gives is documented, with the status it really has
    assert set(create["responses"]) == {"200", "202", "400", "401", "403", "404", "409", "413"} | {
        "422",
        "503",
    }
    assert create["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Accepted"
    )
    tokens = spec["paths"]["/api/v1/admin/tokens"]["post"]["responses"]
    assert "201" in tokens and "200" not in tokens and "403" in tokens
    health = spec["paths"]["/health"]["get"]["responses"]
    assert health["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/Health")
    assert create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "HTTPValidationError"
    )
    assert (
        create["security"] == [{"HTTPBearer": []}]
        and "security" not in spec["paths"]["/health"]["get"]
    )
    params = {p["name"] for p in spec["paths"]["/api/v1/tasks/"]["get"]["parameters"]}
    assert {
        "limit",
        "skip",
        "status",
        "task_type",
        "origin_instance",
        "origin_zone",
        "origin_tenant_id",
    } <= params
    generation = spec["paths"]["/api/v1/tasks/generation"]["get"]["parameters"]
    assert {"workflow_id", "status"} <= {p["name"] for p in generation} and "task_type" not in {
        p["name"] for p in generation
    }  # the seed's filters: that route lists GENERATION tasks only
    status, page = api.call("GET", "/docs")
    assert status == 200 and "swagger-ui-bundle.js" in page
    assert api.call("GET", "/docs/static/swagger-ui-bundle.js")[0] == 200


def test_stream_table_stats_count_by_status_type_and_provider(running_api):
    api = running_api
    instance = f"stats-{uuid.uuid4().hex[:6]}"
    done = [
        api.call("POST", "/api/v1/tasks/", echo_task(origin_instance=instance), api.admin_token)[1][
            "id"
        ]
        for _ in range(3)
    ]
    _, slow = api.call(
        "POST",
        "/api/v1/tasks/",
        echo_task(origin_instance=instance, origin_zone="us", provider_config={"delay_ms": 5000}),
        api.admin_token,
    )
    api.call("POST", f"/api/v1/tasks/{slow['id']}/cancel", token=api.admin_token)
    for task_id in done:
        wait_status(api, task_id, {"COMPLETED"})
    expected = {
        "total_tasks": 4,
        "by_status": {"COMPLETED": 3, "CANCELLED": 1},
        "by_provider": {"echo": 4},
        "by_task_type": {"GENERATION": 4},
        "tasks_last_hour": 4,
        "tasks_last_24h": 4,
    }
    deadline = time.monotonic() + 30
    while True:  # the tables are about a second behind the task store
        status, stats = api.call(
            "GET", f"/api/v1/monitoring/stats?origin_instance={instance}", token=api.admin_token
        )
        if stats == expected or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status == 200 and stats == expected
    _, zone = api.call(
        "GET",
        f"/api/v1/monitoring/stats?origin_instance={instance}&origin_zone=us",
        token=api.admin_token,
    )
    assert zone["total_tasks"] == 1 and zone["by_status"] == {"CANCELLED": 1}
    user = api.call("POST", "/api/v1/admin/tokens", {"tenant": "acme"}, api.admin_token)[1]["token"]
    assert api.call("GET", "/api/v1/monitoring/stats", token=user)[0] == 403
