"""The real API application on a real port, in a background thread with its own loop, so
synchronous clients (confluent-kafka's registry client, urllib) can call it from tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from aiohttp import web
from pydantic import SecretStr

from api.app import create_app
from api.auth import hash_token, new_token
from processors.task_machine import TaskState
from state.db import Database
from state.migrations import migrate
from streams.records import TaskStatus
from taskstream.embedded import EmbeddedPostgres, free_port
from taskstream.settings import Settings


@dataclass
class RunningApi:
    url: str
    settings: Settings
    admin_token: str

    def call(
        self,
        method: str,
        path: str,
        body: object | None = None,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, object]:
        """One HTTP request; returns (status, parsed JSON body or text)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        status, _, content = self.call_raw(method, path, data, token, headers)
        text = content.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def call_raw(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request; returns (status, response headers, body bytes)."""
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers=headers or {}
        )
        if data is not None and not req.has_header("Content-type"):
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback test server
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


#: Set once per session by `_data_dirs`: a scratch root, and one models dir that every
#: test's worker shares (the tiny pipeline is built into it once).
DIRS: dict[str, Path] = {}


@pytest.fixture(scope="session", autouse=True)
def _data_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    DIRS["scratch"] = tmp_path_factory.mktemp("data")
    DIRS["models"] = tmp_path_factory.mktemp("models")


def settings_for(bootstrap: str, database_url: str, **overrides) -> Settings:
    values = {
        "data_dir": tempfile.mkdtemp(dir=DIRS["scratch"]),
        "models_dir": DIRS["models"],
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "admin_token": new_token(),
        "api_port": free_port(),
        "heartbeat_interval_s": 0.5,
        "kafka_single_record_batches": True,  # the embedded broker's watermark quirk
        **overrides,
    }
    return Settings(**values)


@contextlib.contextmanager
def serve_api(settings: Settings) -> Iterator[RunningApi]:
    """The app from `create_app(settings)` on its port, in a thread with its own loop."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(settings))
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(
                web.TCPSite(runner, settings.api_host, settings.api_port).start()
            )
        except BaseException as exc:  # surface start-up failures in the test, not a hang
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(60), "API did not start"
    if failure:
        raise failure[0]
    try:
        yield RunningApi(
            f"http://{settings.api_host}:{settings.api_port}",
            settings,
            settings.admin_token.get_secret_value(),
        )
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def run_members(
    api: RunningApi, workers: Sequence[tuple[str, dict]] = (("inference", {}), ("training", {}))
) -> Iterator[threading.Event]:
    """The real processors and `workers` (kind, settings changed for it: by default one
    worker of each kind), in threads, against `api`. Setting the yielded event stops them."""
    from gpu.worker import WorkerKind, create_worker
    from processors.service import create_processors

    settings = api.settings.model_copy(
        update={
            "schema_registry_url": api.url + "/schema-registry",
            "schema_registry_basic_auth": SecretStr(api.settings.registry_auth()),
        }
    )
    processes = [
        create_processors(settings),
        *(create_worker(settings.model_copy(update=c), WorkerKind(k)) for k, c in workers),
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=p.run, args=(stop,)) for p in processes]
    for thread in threads:
        thread.start()
    try:
        yield stop
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


@pytest.fixture
def running_api(bootstrap: str, database_url: str) -> Iterator[RunningApi]:
    with serve_api(settings_for(bootstrap, database_url)) as api:
        yield api


@pytest.fixture
def members(running_api: RunningApi) -> Iterator[threading.Event]:
    with run_members(running_api) as stop:
        yield stop


@pytest.fixture
def user_token(db: Database) -> str:
    """A user-role token for tenant `acme` (issue tokens through the API once it exists)."""
    token = new_token()
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO api_tokens (token_hash, role, tenant) VALUES (%s, 'user', 'acme')",
            (hash_token(token),),
        )
    return token


def wait_status(
    api, task_id: str, wanted: set[str], token: str | None = None, timeout: float = 30
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = api.call("GET", f"/api/v1/tasks/{task_id}", token=token or api.admin_token)
        assert status == 200, body
        if body["status"] in wanted or time.monotonic() > deadline:
            assert body["status"] in wanted, body
            return body
        time.sleep(0.1)


def multipart(
    files: dict[str, tuple[str, bytes]] | None = None, **fields: str
) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with `files` ({part: (filename, bytes)}) and text `fields`;
    returns (body, headers)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    for name, (filename, data) in (files or {}).items():
        parts.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}";'
                f' filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A migrated embedded Postgres of the test's own, for tests that freeze it."""
    postgres = EmbeddedPostgres(tmp_path / "pgdata").start()
    try:
        with Database(postgres.url) as db:
            migrate(db)
        yield postgres
    finally:
        postgres.stop()


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """A process and its children stopped (SIGSTOP) for the block: they keep their sockets
    and answer nothing, as a hung or partitioned server."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for proc in procs:
        os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in procs:
            os.kill(proc.pid, signal.SIGCONT)


STATE_TIME = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def task_state(**changes) -> TaskState:
    """A new echo GENERATION task's state as the task processor writes it, with `changes`."""
    base = TaskState(
        task_id=uuid.uuid4(),
        task_type="GENERATION",
        status=TaskStatus.PENDING,
        version=1,
        created_at=STATE_TIME,
        updated_at=STATE_TIME,
        provider_type="echo",
        fields={"prompt": "a red circle"},
    )
    return replace(base, **changes)
