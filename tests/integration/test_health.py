"""/health reports each component, and turns 200 only when real members have joined."""

from __future__ import annotations

import time

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
