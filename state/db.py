"""A thin datastore adapter over psycopg pools.

Connections are pool-owned; `transaction()` yields a connection inside one transaction;
driver errors surface as our own `DatabaseError` (or `IntegrityError`). SQL is composed
with `psycopg.sql`, never by string formatting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import psycopg
from psycopg.abc import Params, Query
from psycopg_pool import AsyncConnectionPool, ConnectionPool


class DatabaseError(Exception):
    """Postgres refused or could not run a statement."""


class IntegrityError(DatabaseError):
    """A constraint (unique, foreign key, check) was violated."""


class DatabaseUnavailable(DatabaseError):
    """Postgres could not be reached, or did not answer in time."""


def _translate(exc: psycopg.Error) -> DatabaseError:
    if isinstance(exc, psycopg.IntegrityError):
        return IntegrityError(str(exc))
    if isinstance(exc, psycopg.OperationalError):  # connection failures, pool timeouts
        return DatabaseUnavailable(str(exc))
    return DatabaseError(str(exc))


def probe(url: str, query: Query, timeout_s: int = 2) -> list[tuple]:
    """One read on a fresh connection, given up (`DatabaseError`) after about `timeout_s`
    seconds however the server fails: refusing, never answering, or answering slowly.

    For health checks, which must answer fast: on a pooled connection to a server that stops
    answering (a frozen process, a partition) a query waits until `AsyncDatabase`'s bound,
    and cancelling it takes psycopg up to ~10 s more (a cancel request the server never reads,
    then a wait for the query to end).
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
    """asyncio pool, for the API.

    Every use is bounded by `timeout_s` (`DatabaseUnavailable` past it), so a request
    cannot wait forever on a server that stopped answering. Past the bound psycopg cancels
    the query: against a server that answers nothing that takes up to ~10 s more (a cancel
    request, then a wait for the query to end) before it drops the connection.
    """

    def __init__(
        self, url: str, min_size: int = 1, max_size: int = 8, timeout_s: float = 10.0
    ) -> None:
        # autocommit: a lone read is one round trip; `transaction()` still brackets the rest
        self._pool = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True},
            timeout=timeout_s,  # for a free connection
        )
        self._timeout_s = timeout_s

    async def open(self, timeout: float = 30.0) -> AsyncDatabase:
        await self._pool.open(wait=True, timeout=timeout)
        return self

    async def close(self) -> None:
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection (autocommit) for one use within the bound, its errors as
        `DatabaseError`s."""
        try:
            async with asyncio.timeout(self._timeout_s), self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise _translate(exc) from exc
        except TimeoutError:
            raise self._no_answer() from None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def fetchone(self, query: Query, params: Params = ()) -> tuple | None:
        """One row of a single read-only statement, outside any transaction."""
        async with self.connection() as conn:
            return await (await conn.execute(query, params)).fetchone()

    async def fetchall(self, query: Query, params: Params = ()) -> list[tuple]:
        """The rows of a single read-only statement, outside any transaction."""
        async with self.connection() as conn:
            return await (await conn.execute(query, params)).fetchall()

    def _no_answer(self) -> DatabaseUnavailable:
        return DatabaseUnavailable(f"no answer within {self._timeout_s:g} s")
