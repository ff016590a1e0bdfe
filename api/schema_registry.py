"""The built-in schema registry's REST surface: the Confluent subset clients need.

Served under `/schema-registry` when `SCHEMA_REGISTRY_URL` is unset. Reads need any valid
token; registering schemas needs the admin role. Errors use Confluent's body shape
`{"error_code": ..., "message": ...}`, which confluent-kafka's client turns into
`SchemaRegistryError`.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from api.keys import PRINCIPAL, REGISTRY_STORE
from state.registry_store import InvalidSchema, RegistryStoreError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
routes = web.RouteTableDef()


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body), status=status, content_type=CONTENT_TYPE.split(";")[0]
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"error_code": code, "message": message}, status)


@web.middleware
async def registry_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except RegistryStoreError as exc:
        return _error(exc.http_status, exc.error_code, str(exc))


async def _schema_body(request: web.Request) -> str:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidSchema('body must be JSON like {"schema": "..."}') from None
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise InvalidSchema('body must be JSON like {"schema": "..."}')
    if body.get("schemaType", "AVRO") != "AVRO":
        raise InvalidSchema(f"schemaType {body['schemaType']!r} is not supported; only AVRO")
    if "\x00" in body["schema"]:
        raise InvalidSchema("the schema may not contain NUL characters")
    if body.get("references"):
        raise InvalidSchema("schema references are not supported")
    return body["schema"]


def _store(request: web.Request):
    return request.config_dict[REGISTRY_STORE]


@routes.get("/subjects")
async def list_subjects(request: web.Request) -> web.Response:
    return _json(await asyncio.to_thread(_store(request).subjects))


@routes.get("/subjects/{subject}/versions")
async def list_versions(request: web.Request) -> web.Response:
    return _json(await asyncio.to_thread(_store(request).versions, request.match_info["subject"]))


@routes.get("/subjects/{subject}/versions/{version}")
async def get_version(request: web.Request) -> web.Response:
    found = await asyncio.to_thread(
        _store(request).version, request.match_info["subject"], request.match_info["version"]
    )
    return _json(
        {
            "subject": found.subject,
            "version": found.version,
            "id": found.schema_id,
            "schema": found.schema,
        }
    )


@routes.post("/subjects/{subject}/versions")
async def register(request: web.Request) -> web.Response:
    if not request[PRINCIPAL].is_admin:
        return _error(403, 40301, "registering schemas needs an admin token")
    schema = await _schema_body(request)
    schema_id = await asyncio.to_thread(
        _store(request).register, request.match_info["subject"], schema
    )
    return _json({"id": schema_id})


@routes.post("/subjects/{subject}")
async def lookup(request: web.Request) -> web.Response:
    """Is this schema registered under the subject? (used by serializers that don't register)"""
    schema = await _schema_body(request)
    subject = request.match_info["subject"]
    store = _store(request)
    found = await asyncio.to_thread(store.lookup, subject, schema)
    return _json(
        {
            "subject": subject,
            "version": found.version,
            "id": found.schema_id,
            "schema": found.schema,
        }
    )


@routes.get("/schemas/ids/{schema_id:\\d+}")
async def schema_by_id(request: web.Request) -> web.Response:
    text = await asyncio.to_thread(
        _store(request).schema_by_id, int(request.match_info["schema_id"])
    )
    return _json({"schema": text})


@routes.post("/compatibility/subjects/{subject}/versions/{version}")
async def compatibility(request: web.Request) -> web.Response:
    schema = await _schema_body(request)
    ok, problems = await asyncio.to_thread(
        _store(request).is_compatible,
        request.match_info["subject"],
        request.match_info["version"],
        schema,
    )
    body: dict = {"is_compatible": ok}
    if request.query.get("verbose", "false").lower() == "true":
        body["messages"] = problems
    return _json(body)


def create_registry_app() -> web.Application:
    app = web.Application(middlewares=[registry_errors])
    app.add_routes(routes)
    return app
