"""/health reports each component, and turns 200 only when real members have joined."""

from __future__ import annotations

import os
import signal
import time

import psutil

from state.db import Database
from state.migrations import migrate
from taskstream.embedded import EmbeddedPostgres
from tests.integration.conftest import serve_api, settings_for

MEMBERS = ("processors", "inference_workers", "training_workers")


def _wait_for(api, status: int, members_down: int = 0, timeout: float = 60.0) -> dict:
    """Poll /health until it answers `status` with at least `members_down` members down."""
    deadline = time.monotonic() + timeout
    while True:
        got, body = api.call("GET", "/health")
        down = sum(body["components"][n]["status"] != "ok" for n in MEMBERS)
        if (got == status and down >= members_down) or time.monotonic() > deadline:
            assert got == status and down >= members_down, body
            return body
        time.sleep(0.2)


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
    body = _wait_for(running_api, 503, members_down=len(MEMBERS), timeout=30)
    assert all(body["components"][n]["detail"] == "no ready member" for n in MEMBERS)


def test_health_answers_within_seconds_while_postgres_is_frozen(bootstrap, tmp_path):
    # Its own server: this one stops answering (SIGSTOP), as a hung or partitioned one would.
    postgres = EmbeddedPostgres(tmp_path / "pgdata").start()
    try:
        with Database(postgres.url) as db:
            migrate(db)
        with serve_api(settings_for(bootstrap, postgres.url)) as api:
            _, body = api.call("GET", "/health")
            assert body["components"]["database"]["status"] == "ok"
            server = psutil.Process(postgres.pid)
            frozen = [server, *server.children(recursive=True)]  # the API's backends too
            for proc in frozen:
                os.kill(proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                status, body = api.call("GET", "/health")
                waited = time.monotonic() - started
            finally:
                for proc in frozen:
                    os.kill(proc.pid, signal.SIGCONT)
            assert status == 503 and waited < 6, waited
            database = body["components"]["database"]
            assert database["status"] == "unavailable" and "timeout" in database["detail"]
            assert body["components"]["schema_registry"] == {
                "status": "unavailable",
                "detail": "unreachable: its database does not answer",
            }
            assert body["components"]["broker"]["status"] == "ok"
            _, body = api.call("GET", "/health")
            assert body["components"]["database"] == {"status": "ok", "detail": "connected"}
    finally:
        postgres.stop()
