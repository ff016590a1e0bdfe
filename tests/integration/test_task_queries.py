"""Task lists read from Postgres: the chunked walk the bare-array lists are written from, and
the summary rows of monitoring lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.task_queries import TaskFilter, TaskReader
from processors.task_machine import TaskState
from state import task_store
from state.db import AsyncDatabase
from state.task_store import BatchWrite
from tests.integration.conftest import task_state

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _write(db, saved=(), deleted=()) -> None:
    with db.transaction() as conn:
        epoch = task_store.claim(conn, "g", 0, "member")
    batch = BatchWrite(group="g", epochs={0: epoch}, saved=list(saved), deleted=list(deleted))
    task_store.apply_batch(db, batch)


def _save(db, *states: TaskState) -> None:
    _write(db, saved=states)


def _task(created_at: datetime, **fields) -> TaskState:
    return task_state(
        created_at=created_at,
        updated_at=created_at,
        tenant="acme",
        fields={"prompt": "p", **fields},
    )


@pytest.fixture
async def reader(database_url):
    adb = await AsyncDatabase(database_url).open()
    yield TaskReader(adb)
    await adb.close()


async def _walk(reader, f, skip, limit, chunk, chunk_bytes=10**9):
    walk = reader.walk(f, skip, limit, (chunk, chunk), chunk_bytes)
    return [[r["id"] for r in rows] async for rows in walk]


async def test_the_walk_gives_the_page_a_single_query_gives_in_chunks(db, reader):
    # eleven tasks, three pairs of them created in the same microsecond: id breaks the tie
    tasks = [_task(T0 + timedelta(seconds=i // 2)) for i in range(11)]
    _save(db, *tasks)
    f = TaskFilter(tenant="acme")
    for skip, limit in [(0, 100), (0, 4), (2, 7), (9, 5), (11, 3), (0, 6)]:
        page = [r["id"] for r in await reader.list(f, skip, limit)]
        chunks = await _walk(reader, f, skip, limit, chunk=3)
        assert [i for c in chunks for i in c] == page, (skip, limit)
        assert all(1 <= len(c) <= 3 for c in chunks)
    assert len(page) == 6 and await _walk(reader, TaskFilter(tenant="globex"), 0, 10, 3) == []


async def test_tasks_created_or_deleted_during_a_walk_neither_repeat_nor_skip_rows(db, reader):
    tasks = [_task(T0 + timedelta(seconds=i)) for i in range(6)]
    _save(db, *tasks)
    newest_first = [t.task_id for t in reversed(tasks)]
    seen = []
    async for rows in reader.walk(TaskFilter(tenant="acme"), 0, 100, (2, 2)):
        seen += [r["id"] for r in rows]
        if len(seen) == 2:  # meanwhile: a newer task, and one already listed deleted
            _write(db, saved=[_task(T0 + timedelta(hours=1))], deleted=[newest_first[0]])
    assert seen == newest_first
    assert newest_first[0] not in task_store.load(db, newest_first)


async def test_chunks_are_sized_by_the_bodies_of_the_rows_before_them(db, reader):
    small = [_task(T0 + timedelta(seconds=i)) for i in range(40)]
    big = [_task(T0 + timedelta(hours=1, seconds=i), blob="x" * 5000) for i in range(6)]
    _save(db, *small, *big)
    sizes = [
        len(rows) async for rows in reader.walk(TaskFilter(tenant="acme"), 0, 100, (2, 16), 12_000)
    ]
    # 2 to start; ~5 KB bodies: 2 a chunk; then small bodies: as many as the most allowed
    assert sizes[:3] == [2, 2, 2] and max(sizes) == 16 and sum(sizes) == 46, sizes
    rows = [r async for chunk in reader.walk(TaskFilter(tenant="acme"), 0, 1) for r in chunk]
    assert rows[0]["fields"] == {"prompt": "p", "blob": "x" * 5000}


async def test_the_walk_reads_bodies_as_a_single_read_does(db, reader):
    """Bodies travel as text to be measured: integers past 64 bits stay exact (orjson
    would round them to floats), as with psycopg's own reading."""
    _save(db, _task(T0, config={"big": 2**70, "x": 0.1, "s": "é\u2028"}))
    [[walked]] = [chunk async for chunk in reader.walk(TaskFilter(tenant="acme"), 0, 5)]
    [listed] = await reader.list(TaskFilter(tenant="acme"), 0, 5)
    assert walked == listed and walked["fields"]["config"]["big"] == 2**70


async def test_summary_rows_say_whether_a_task_has_errors_without_its_body(db, reader):
    plain = _task(T0, config={"blob": "x" * 1000})
    failed = _task(T0 + timedelta(seconds=1), errors=["boom"])
    emptied = _task(T0 + timedelta(seconds=2), errors=[])
    _save(db, plain, failed, emptied)
    rows = await reader.list(TaskFilter(tenant="acme"), 0, 10, summary=True)
    assert [(r["id"], r["fields"]) for r in rows] == [
        (emptied.task_id, {"errors": False}),
        (failed.task_id, {"errors": True}),
        (plain.task_id, {"errors": False}),
    ]
