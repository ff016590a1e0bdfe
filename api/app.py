"""The aiohttp application factory. `create_app(settings)` is what `taskstream api` and the
tests run; resources open and close in `cleanup_ctx`, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import swagger_ui_bundle
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import SecretStr

from api.admin import routes as admin_routes
from api.auth import Principal, TokenStore, new_token, token_from_header
from api.commands import CommandSender, OutcomeWaiter
from api.health import HEALTH, health, shared_health
from api.heartbeats import HeartbeatMonitor
from api.keys import (
    COMMANDS,
    DB,
    EXTERNAL_REGISTRY,
    HEARTBEATS,
    OPENAPI,
    OUTCOMES,
    PRINCIPAL,
    QUEUES,
    REGISTRY_STORE,
    SERDE,
    SETTINGS,
    SIGNER,
    STORAGE,
    SYNC_DB,
    TASK_COUNTS,
    TASK_READER,
    TOKENS,
)
from api.loras import routes as lora_routes
from api.monitoring import routes as monitoring_routes
from api.openapi import DOCS_PAGE, build_spec
from api.responses import field_error, json_response
from api.schema_registry import create_registry_app
from api.signing import UrlSigner
from api.storage import routes as storage_routes
from api.storage import signed_storage_read
from api.task_bodies import NUL_MESSAGE
from api.task_queries import TaskReader
from api.tasks import routes as task_routes
from api.training import routes as training_routes
from state.db import AsyncDatabase, Database, DatabaseUnavailable
from state.migrations import migrate
from state.registry_store import RegistryStore
from state.storage import storage_from_settings
from streams.admin import ensure_topics
from streams.latest import LatestRecords
from streams.records import TaskCountsSnapshot
from streams.runtime import connect_serde
from streams.schemas import load_catalog
from streams.serde import AvroSerde
from streams.topics import MONITORING_STATS
from taskstream import __version__
from taskstream.settings import Settings

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs"})
PUBLIC_PREFIXES = ("/docs/static/",)


class ClientErrorLog(logging.Filter):
    """aiohttp logs a request it cannot parse (a NUL in a header, a malformed request line:
    the client's error, answered 400) at ERROR with its parser's traceback. This filter on
    `aiohttp.server` makes that one INFO line with the reason (not the raw bytes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 400) < 500:
            reason = str(exc.message).split("\n", 1)[0].rstrip(":")  # then the raw bytes
            record.msg = f"{record.getMessage()}: {exc.code} {reason}"
            record.args = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"detail": detail}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every error leaves as JSON `{"detail": ...}`, including aiohttp's own (404, 405, 413),
    an unreachable database (503) and anything unexpected (500, logged)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            detail = (
                f"request body exceeds the {request.app[SETTINGS].max_request_bytes} byte limit"
            )
        else:
            detail = exc.reason
        return _problem(
            exc.status,
            detail,
            {k: v for k, v in exc.headers.items() if k.lower() != "content-type"},
        )
    except DatabaseUnavailable as exc:
        logger.warning("%s %s: the database is unavailable (%s)", request.method, request.path, exc)
        return _problem(503, f"the database is unavailable ({exc})", {"Retry-After": "5"})
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return _problem(500, "internal error; the server logged it")


@web.middleware
async def refuse_nul(request: web.Request, handler):
    """A NUL character in the path or the query is 422: no route can use one, and Postgres
    cannot store or compare it. (JSON bodies are checked as they are parsed.)"""
    if "\x00" in request.path:
        raise field_error(["path"], NUL_MESSAGE, "string_nul")
    for name, value in request.query.items():
        if "\x00" in name or "\x00" in value:
            raise field_error(["query", name.replace("\x00", "")], NUL_MESSAGE, "string_nul")
    return await handler(request)


@web.middleware
async def authenticate(request: web.Request, handler):
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    if signed_storage_read(request):
        request[PRINCIPAL] = Principal(role="signed-url", tenant=None)  # this path, read only
        return await handler(request)
    token = token_from_header(request.headers.get("Authorization"))
    principal = await request.app[TOKENS].authenticate(token) if token else None
    if principal is None:
        return _problem(
            401,
            "missing or invalid token; send Authorization: Bearer <token>",
            {"WWW-Authenticate": 'Bearer realm="taskstream"'},
        )
    request[PRINCIPAL] = principal
    return await handler(request)


async def _databases(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    url = settings.require_database_url()
    app[SYNC_DB] = await asyncio.to_thread(Database(url, max_size=2).open)
    await asyncio.to_thread(migrate, app[SYNC_DB])
    # Every connection open from the start and kept: a burst of requests would otherwise
    # wait for new ones (tens of ms each), and an idle spell would close them again.
    app[DB] = await AsyncDatabase(
        url, min_size=8, max_size=8, timeout_s=settings.database_timeout_s
    ).open()
    app[TOKENS] = TokenStore(app[DB])
    if settings.admin_token is not None:
        await app[TOKENS].ensure(
            settings.admin_token.get_secret_value(), "admin", label="TASKSTREAM_ADMIN_TOKEN"
        )
    yield
    await app[DB].close()
    await asyncio.to_thread(app[SYNC_DB].close)


async def _schemas(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.builtin_registry:
        app[REGISTRY_STORE] = RegistryStore(app[SYNC_DB])
        app[SERDE] = AvroSerde(app[REGISTRY_STORE], load_catalog())
        await asyncio.to_thread(app[SERDE].register_all)
    else:
        app[SERDE], app[EXTERNAL_REGISTRY] = await asyncio.to_thread(
            connect_serde, settings.registry_url(), settings.registry_auth()
        )
    yield
    if EXTERNAL_REGISTRY in app:
        app[EXTERNAL_REGISTRY].close()


async def _tasks(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[TASK_READER] = TaskReader(app[DB])
    app[STORAGE] = storage_from_settings(settings.storage_root(), settings.storage_url)
    app[SIGNER] = UrlSigner.for_settings(
        settings.url_signing_key.get_secret_value() if settings.url_signing_key else None,
        settings.admin_token.get_secret_value() if settings.admin_token else None,
    )
    app[OUTCOMES] = await OutcomeWaiter(settings.require_database_url(), app[DB]).start()
    app[COMMANDS] = CommandSender(
        settings.require_bootstrap(),
        app[SERDE],
        **{"message.timeout.ms": round(settings.command_delivery_timeout_s * 1000)},
    )
    yield
    await asyncio.to_thread(app[COMMANDS].close)
    await app[OUTCOMES].stop()


async def _heartbeats(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # Idempotent; in compose deployments the API is the first process to need the topics.
    await asyncio.to_thread(ensure_topics, settings.require_bootstrap())
    monitor = HeartbeatMonitor(
        settings.require_bootstrap(),
        app[SERDE],
        max_age_s=3 * settings.heartbeat_interval_s,
        fetch_wait_ms=settings.kafka_watch_fetch_wait_ms,
    )
    app[HEARTBEATS] = monitor.start()
    app[TASK_COUNTS] = LatestRecords(
        settings.require_bootstrap(),
        MONITORING_STATS,
        app[SERDE],
        TaskCountsSnapshot,
        settings.kafka_watch_fetch_wait_ms,
    ).start()
    yield
    await asyncio.to_thread(monitor.stop)
    await asyncio.to_thread(app[TASK_COUNTS].stop)


async def _openapi(app: web.Application) -> AsyncIterator[None]:
    # Built once at start-up, when the router is complete and frozen.
    app[OPENAPI] = build_spec(app, "taskstream (Sartiq Compute API)", __version__)
    yield


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_PAGE, content_type="text/html")


def create_app(settings: Settings) -> web.Application:
    if settings.admin_token is None:
        token = new_token()
        settings = settings.model_copy(update={"admin_token": SecretStr(token)})
        logger.warning("TASKSTREAM_ADMIN_TOKEN is unset; generated admin token: %s", token)
    app = web.Application(
        middlewares=[
            json_errors,
            refuse_nul,
            # as FastAPI, which the seed's API runs on: a path that resolves only with its
            # trailing slash added or removed (or doubled slashes merged) redirects there with
            # 307, which keeps the method and body
            web.normalize_path_middleware(redirect_class=web.HTTPTemporaryRedirect),
            web.normalize_path_middleware(
                append_slash=False,
                remove_slash=True,
                # merging here would also try the path less its last character, slash or not
                # (aiohttp 3.14), redirecting /api/v1/tasks/generation's 405 to .../generatio
                merge_slashes=False,
                redirect_class=web.HTTPTemporaryRedirect,
            ),
            authenticate,
        ],
        client_max_size=settings.max_request_bytes,
    )
    app[SETTINGS] = settings
    app[QUEUES] = settings.queue_routing()
    app[HEALTH] = shared_health(app)
    app.cleanup_ctx.extend([_openapi, _databases, _schemas, _heartbeats, _tasks])
    app.router.add_get("/health", health)
    app.add_routes(task_routes)
    app.add_routes(monitoring_routes)
    app.add_routes(admin_routes)
    app.add_routes(storage_routes)
    app.add_routes(lora_routes)
    app.add_routes(training_routes)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs_page)
    app.router.add_static("/docs/static", swagger_ui_bundle.swagger_ui_path)
    if settings.builtin_registry:
        app.add_subapp("/schema-registry", create_registry_app())
    return app
