"""The real API application on a real port, in a background thread with its own loop, so
synchronous clients (confluent-kafka's registry client, urllib) can call it from tests."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from api.app import create_app
from api.auth import hash_token, new_token
from state.db import Database
from taskstream.embedded import free_port
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
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers=headers or {}
        )
        if data is not None and "Content-Type" not in req.headers:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback test server
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text


@pytest.fixture
def make_settings(bootstrap: str, database_url: str) -> Callable[..., Settings]:
    def build(**overrides) -> Settings:
        values = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DATABASE_URL": database_url,
            "admin_token": new_token(),
            "api_port": free_port(),
            "heartbeat_interval_s": 0.5,
            **overrides,
        }
        return Settings(**values)

    return build


@pytest.fixture
def running_api(make_settings) -> Iterator[RunningApi]:
    settings = make_settings()
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
    yield RunningApi(
        f"http://{settings.api_host}:{settings.api_port}",
        settings,
        settings.admin_token.get_secret_value(),
    )
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


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
