"""`GET /health`: 200 when every component is ready, 503 naming what is not.

Anyone may ask; the components' details (the broker's address, database errors, member
counts) are for the operator only, who sends the `TASKSTREAM_ADMIN_TOKEN`. That check needs
no database, so /health answers the same way while Postgres is down.

The route needs no token, so its checks are shared: at most one runs at a time and its
answer serves every request for the next `FRESH_S`. Without that, each request opened a
database connection and a broker connection, and a flood of them took a thread of the
default executor each (which storage reads and uploads also use) and a backend fork each.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import BaseModel, Field

from api.auth import token_from_header
from api.keys import EXTERNAL_REGISTRY, HEARTBEATS, REGISTRY_STORE, SERDE, SETTINGS
from api.openapi import documented
from api.responses import json_response
from state.db import DatabaseError, probe
from streams.admin import broker_ready
from streams.records import WorkerRole

# Each check gives up after about this long, so /health answers within a few seconds
# whatever has failed (a frozen database used to hold it forever).
CHECK_TIMEOUT_S = 2
FRESH_S = 1.0  # how long one check's answer serves later requests
_SUBJECTS = "SELECT DISTINCT subject FROM registry_versions"

_MEMBER_ROLES = {
    "processors": WorkerRole.PROCESSORS,
    "inference_workers": WorkerRole.INFERENCE,
    "training_workers": WorkerRole.TRAINING,
}


def _component(ok: bool, detail: str) -> dict:
    return {"status": "ok" if ok else "unavailable", "detail": detail}


async def _database(app: web.Application) -> tuple[dict, list[str] | None]:
    """The database's component, and the embedded registry's subjects when it has them
    (the registry lives in the same database): one bounded probe."""
    try:
        rows = await asyncio.to_thread(probe, app[SETTINGS].require_database_url(), _SUBJECTS)
    except DatabaseError as exc:
        return _component(False, f"no answer: {exc}".strip()), None
    return _component(True, "connected"), [r[0] for r in rows]


async def _registry(app: web.Application, embedded_subjects: list[str] | None) -> dict:
    if REGISTRY_STORE in app:
        if embedded_subjects is None:
            return _component(False, "unreachable: its database does not answer")
        subjects = embedded_subjects
    else:
        try:
            subjects = await asyncio.wait_for(
                asyncio.to_thread(app[EXTERNAL_REGISTRY].subjects), CHECK_TIMEOUT_S
            )
        except Exception as exc:  # noqa: BLE001 - any failure (RegistryError, OSError, ...) means "not ready"
            return _component(False, f"unreachable: {exc or type(exc).__name__}")
    missing = set(app[SERDE].register_all()) - set(subjects)
    return _component(
        not missing, f"{len(subjects)} subjects" if not missing else f"missing {sorted(missing)}"
    )


class Component(BaseModel):
    status: str
    detail: str | None = Field(None, description="Only for the TASKSTREAM_ADMIN_TOKEN.")


class Health(BaseModel):
    status: str
    components: dict[str, Component]


Answer = tuple[dict, int]  # body, HTTP status


class SharedCheck:
    """Runs `check` for the first caller; callers meanwhile wait for that run, and callers
    within `fresh_s` after it get its answer."""

    def __init__(self, check: Callable[[], Awaitable[Answer]], fresh_s: float = FRESH_S) -> None:
        self._check = check
        self._fresh_s = fresh_s
        self._answer: Answer | None = None
        self._at = 0.0
        self._running: asyncio.Task[Answer] | None = None

    async def get(self) -> Answer:
        if self._answer is not None and time.monotonic() - self._at < self._fresh_s:
            return self._answer
        if self._running is None:
            self._running = asyncio.create_task(self._run())
        return await asyncio.shield(self._running)  # a caller that leaves cancels only itself

    async def _run(self) -> Answer:
        try:
            self._answer = await self._check()
            self._at = time.monotonic()
            return self._answer
        finally:
            self._running = None


HEALTH = web.AppKey("health", SharedCheck)


def shared_health(app: web.Application) -> SharedCheck:
    return SharedCheck(lambda: _check(app))


@documented("Health Check", "health", response=Health, public=True, errors=((503, Health),))
async def health(request: web.Request) -> web.Response:
    """200 when every component is ready, 503 naming what is not."""
    body, status = await request.app[HEALTH].get()
    if not _is_operator(request):
        body = {
            **body,
            "components": {n: {"status": c["status"]} for n, c in body["components"].items()},
        }
    return json_response(body, status=status)


def _is_operator(request: web.Request) -> bool:
    token = token_from_header(request.headers.get("Authorization"))
    admin = request.app[SETTINGS].admin_token
    return (
        token is not None
        and admin is not None
        and hmac.compare_digest(token.encode(), admin.get_secret_value().encode())
    )


async def _check(app: web.Application) -> Answer:
    bootstrap = app[SETTINGS].require_bootstrap()
    broker_ok, (database, subjects) = await asyncio.gather(
        asyncio.to_thread(broker_ready, bootstrap, CHECK_TIMEOUT_S), _database(app)
    )
    components = {
        "broker": _component(
            broker_ok, bootstrap if broker_ok else f"no metadata from {bootstrap}"
        ),
        "database": database,
        "schema_registry": await _registry(app, subjects),
    }
    for name, role in _MEMBER_ROLES.items():
        members = app[HEARTBEATS].ready(role)
        components[name] = _component(
            bool(members), f"{len(members)} ready" if members else "no ready member"
        )
    ok = all(c["status"] == "ok" for c in components.values())
    return {"status": "ok" if ok else "unavailable", "components": components}, (200 if ok else 503)
