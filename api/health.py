"""`GET /health`: 200 when every component is ready, 503 naming what is not."""

from __future__ import annotations

import asyncio

from aiohttp import web
from pydantic import BaseModel

from api.keys import EXTERNAL_REGISTRY, HEARTBEATS, REGISTRY_STORE, SERDE, SETTINGS
from api.openapi import documented
from api.responses import json_response
from state.db import DatabaseError, probe
from streams.admin import broker_ready
from streams.records import WorkerRole

# Each check gives up after about this long, so /health answers within a few seconds
# whatever has failed (a frozen database used to hold it forever).
CHECK_TIMEOUT_S = 2
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
    detail: str


class Health(BaseModel):
    status: str
    components: dict[str, Component]


@documented("Health Check", "health", response=Health, public=True)
async def health(request: web.Request) -> web.Response:
    """200 when every component is ready, 503 naming what is not."""
    app = request.app
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
    return json_response(
        {"status": "ok" if ok else "unavailable", "components": components},
        status=200 if ok else 503,
    )
