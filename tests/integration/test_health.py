"""/health reports each component, and turns 200 only when real members have joined."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import SecretStr

from gpu.worker import WorkerKind, create_worker
from processors.service import create_processors

MEMBERS = ("processors", "inference_workers", "training_workers")


def _wait_for(api, status: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got, body = api.call("GET", "/health")
        if got == status or time.monotonic() > deadline:
            assert got == status, body
            return body
        time.sleep(0.2)


@pytest.fixture
def members(running_api):
    settings = running_api.settings.model_copy(
        update={
            "schema_registry_url": running_api.url + "/schema-registry",
            "schema_registry_basic_auth": SecretStr(running_api.settings.registry_auth()),
        }
    )
    processes = [
        create_processors(settings),
        create_worker(settings, WorkerKind.INFERENCE),
        create_worker(settings, WorkerKind.TRAINING),
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=p.run, args=(stop,)) for p in processes]
    for thread in threads:
        thread.start()
    yield stop
    stop.set()
    for thread in threads:
        thread.join(30)


def test_health_needs_no_token_and_names_what_is_missing(running_api):
    status, body = running_api.call("GET", "/health")
    assert status == 503 and body["status"] == "unavailable"
    for name in ("broker", "database", "schema_registry"):
        assert body["components"][name]["status"] == "ok", name
    for name in MEMBERS:
        assert body["components"][name] == {"status": "unavailable", "detail": "no ready member"}


def test_health_is_ok_once_members_join_and_flips_when_they_leave(running_api, members):
    body = _wait_for(running_api, 200)
    assert body["status"] == "ok"
    assert all(body["components"][name]["detail"] == "1 ready" for name in MEMBERS)
    members.set()  # graceful stop: each member's last heartbeat says "not ready"
    body = _wait_for(running_api, 503, timeout=30)
    assert {n for n in MEMBERS if body["components"][n]["status"] != "ok"} == set(MEMBERS)
