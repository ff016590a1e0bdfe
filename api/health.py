"""`GET /health`: 200 when every component is ready, 503 naming what is not."""

from __future__ import annotations

import asyncio

from aiohttp import web
from pydantic import BaseModel

from api.keys import DB, EXTERNAL_REGISTRY, HEARTBEATS, REGISTRY_STORE, SERDE, SETTINGS
from api.openapi import documented
from api.responses import json_response
from streams.admin import broker_ready
from streams.records import WorkerRole

_MEMBER_ROLES = {
    "processors": WorkerRole.PROCESSORS,
    "inference_workers": WorkerRole.INFERENCE,
    "training_workers": WorkerRole.TRAINING,
}


def _component(ok: bool, detail: str) -> dict:
    return {"status": "ok" if ok else "unavailable", "detail": detail}


async def _registry(app: web.Application) -> dict:
    try:
        if REGISTRY_STORE in app:
            subjects = await asyncio.to_thread(app[REGISTRY_STORE].subjects)
        else:
            subjects = await asyncio.to_thread(app[EXTERNAL_REGISTRY].subjects)
    except Exception as exc:  # noqa: BLE001 - any failure (RegistryError, OSError, ...) means "not ready"
        return _component(False, f"unreachable: {exc}")
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
    broker_ok, db_ok, registry = await asyncio.gather(
        asyncio.to_thread(broker_ready, bootstrap, 2.0), app[DB].ping(), _registry(app)
    )
    components = {
        "broker": _component(
            broker_ok, bootstrap if broker_ok else f"no metadata from {bootstrap}"
        ),
        "database": _component(db_ok, "connected" if db_ok else "no connection"),
        "schema_registry": registry,
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
