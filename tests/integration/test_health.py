"""/health reports each component, and turns 200 only when real members have joined."""

from __future__ import annotations

import time

from api.health import FRESH_S
from tests.integration.conftest import frozen, serve_api, settings_for

MEMBERS = ("processors", "inference_workers", "training_workers")


def _wait_for(api, status: int, members_down: int = 0, timeout: float = 60.0) -> dict:
    """Poll /health until it answers `status` with at least `members_down` members down."""
    deadline = time.monotonic() + timeout
    while True:
        got, body = api.call("GET", "/health", token=api.admin_token)
        down = sum(body["components"][n]["status"] != "ok" for n in MEMBERS)
        if (got == status and down >= members_down) or time.monotonic() > deadline:
            assert got == status and down >= members_down, body
            return body
        time.sleep(0.2)


def test_health_needs_no_token_and_names_what_is_missing(running_api):
    status, body = running_api.call("GET", "/health", token=running_api.admin_token)
    assert status == 503 and body["status"] == "unavailable"
    for name in ("broker", "database", "schema_registry"):
        assert body["components"][name]["status"] == "ok", name
    for name in MEMBERS:
        assert body["components"][name] == {"status": "unavailable", "detail": "no ready member"}
    # without the operator's token: the same statuses, none of the details (addresses, errors)
    user = running_api.call(
        "POST", "/api/v1/admin/tokens", {"tenant": "acme"}, running_api.admin_token
    )[1]["token"]
    for token in (None, user, "not-a-token"):
        status, anonymous = running_api.call("GET", "/health", token=token)
        assert status == 503 and anonymous == {
            "status": "unavailable",
            "components": {n: {"status": c["status"]} for n, c in body["components"].items()},
        }


def test_health_is_ok_once_members_join_and_flips_when_they_leave(running_api, members):
    body = _wait_for(running_api, 200)
    assert body["status"] == "ok"
    assert all(body["components"][name]["detail"] == "1 ready" for name in MEMBERS)
    members.set()  # graceful stop: each member's last heartbeat says "not ready"
    body = _wait_for(running_api, 503, members_down=len(MEMBERS), timeout=30)
    assert all(body["components"][n]["detail"] == "no ready member" for n in MEMBERS)


def test_health_answers_within_seconds_while_postgres_is_frozen(bootstrap, own_postgres):
    with serve_api(settings_for(bootstrap, own_postgres.url)) as api:
        _, body = api.call("GET", "/health", token=api.admin_token)
        assert body["components"]["database"]["status"] == "ok"
        time.sleep(FRESH_S)  # past the answer the next requests would share
        with frozen(own_postgres.pid):  # the API's pooled backends too
            started = time.monotonic()
            status, body = api.call("GET", "/health", token=api.admin_token)
            waited = time.monotonic() - started
        assert status == 503 and waited < 6, waited
        database = body["components"]["database"]
        assert database["status"] == "unavailable" and "timeout" in database["detail"]
        assert body["components"]["schema_registry"] == {
            "status": "unavailable",
            "detail": "unreachable: its database does not answer",
        }
        assert body["components"]["broker"]["status"] == "ok"
        time.sleep(FRESH_S)
        _, body = api.call("GET", "/health", token=api.admin_token)
        assert body["components"]["database"] == {"status": "ok", "detail": "connected"}


def test_requests_answer_503_while_postgres_is_frozen_and_recover(bootstrap, own_postgres):
    settings = settings_for(bootstrap, own_postgres.url, database_timeout_s=1.0)
    with serve_api(settings) as api:
        token = api.admin_token
        assert api.call("GET", "/api/v1/tasks/?limit=1", token=token)[0] == 200
        with frozen(own_postgres.pid):
            started = time.monotonic()
            status, body = api.call("GET", "/api/v1/tasks/?limit=1", token=token)
            waited = time.monotonic() - started
        # 1 s, then psycopg's cancel of the query (up to 10 s against a frozen server)
        assert (status, body) == (
            503,
            {"detail": "the database is unavailable (no answer within 1 s)"},
        )
        assert waited < 15, waited
        assert api.call("GET", "/api/v1/tasks/?limit=1", token=token)[0] == 200
