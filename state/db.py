"""A thin datastore adapter over psycopg pools.

Connections are pool-owned; `transaction()` yields a connection inside one transaction;
driver errors surface as our own `DatabaseError` (or `IntegrityError`). SQL is composed
with `psycopg.sql`, never by string formatting.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import psycopg
from psycopg.abc import Params, Query
from psycopg_pool import AsyncConnectionPool, ConnectionPool


class DatabaseError(Exception):
    """Postgres refused or could not run a statement."""


class IntegrityError(DatabaseError):
    """A constraint (unique, foreign key, check) was violated."""


def _translate(exc: psycopg.Error) -> DatabaseError:
    if isinstance(exc, psycopg.IntegrityError):
        return IntegrityError(str(exc))
    return DatabaseError(str(exc))


def probe(url: str, query: Query, timeout_s: int = 2) -> list[tuple]:
    """One read on a fresh connection, given up (`DatabaseError`) after about `timeout_s`
    seconds however the server fails: refusing, never answering, or answering slowly.

    For health checks. A pooled connection to a server that stops answering (a frozen
    process, a partition) waits forever, and cancelling its query blocks too: psycopg then
    sends the server a cancel request it never reads.
    """
    try:
        with psycopg.connect(
            url,
            connect_timeout=timeout_s,
            autocommit=True,
            options=f"-c statement_timeout={timeout_s * 1000}",
        ) as conn:
            return conn.execute(query).fetchall()
    except psycopg.Error as exc:
        raise _translate(exc) from exc


class Database:
    """Synchronous pool, for consumer threads, migrations and the CLI."""

    def __init__(self, url: str, min_size: int = 1, max_size: int = 4) -> None:
        # autocommit: `execute` is one round trip; `transaction()` still brackets the rest
        self._pool = ConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False, kwargs={"autocommit": True}
        )

    def open(self, timeout: float = 30.0) -> Database:
        self._pool.open(wait=True, timeout=timeout)
        return self

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Database:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def execute(self, query: Query, params: Params = ()) -> list[tuple]:
        """The rows of one statement run as its own transaction (one round trip)."""
        try:
            with self._pool.connection() as conn:
                cursor = conn.execute(query, params)
                return cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as exc:
            raise _translate(exc) from exc


class AsyncDatabase:
    """asyncio pool, for the API."""

    def __init__(self, url: str, min_size: int = 1, max_size: int = 8) -> None:
        # autocommit: a lone read is one round trip; `transaction()` still brackets the rest
        self._pool = AsyncConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False, kwargs={"autocommit": True}
        )

    async def open(self, timeout: float = 30.0) -> AsyncDatabase:
        await self._pool.open(wait=True, timeout=timeout)
        return self

    async def close(self) -> None:
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    async def fetchone(self, query: Query, params: Params = ()) -> tuple | None:
        """One row of a single read-only statement, outside any transaction."""
        try:
            async with self._pool.connection() as conn:
                return await (await conn.execute(query, params)).fetchone()
        except psycopg.Error as exc:
            raise _translate(exc) from exc
