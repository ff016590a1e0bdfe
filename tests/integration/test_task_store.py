"""The task processor's batch write against real Postgres: one statement that fences, writes
states, verdicts, offsets and outbox rows together, or nothing at all."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from api.commands import parse_notification
from processors.task_counts import PendingCounts
from processors.task_machine import TaskState
from state import offsets, task_store
from state.task_store import NOTIFY_ROW_BYTES, READ_COLUMNS, BatchWrite
from streams.records import CommandOutcome, CommandOutcomeKind, ErrorCategory, TaskStatus
from tests.integration.conftest import STATE_TIME
from tests.integration.conftest import task_state as state

NOW = STATE_TIME
GROUP = "g"


def verdict(task: TaskState, command_id: uuid.UUID) -> CommandOutcome:
    return CommandOutcome(
        command_id=command_id,
        task_id=task.task_id,
        command_type="CreateTask",
        outcome=CommandOutcomeKind.APPLIED,
        version=task.version,
        timestamp=NOW,
    )


def claim(db, partition: int) -> int:
    with db.transaction() as conn:
        return task_store.claim(conn, GROUP, partition, "member")


def rows(db, query: str) -> list[tuple]:
    return db.execute(query)


def test_a_batch_lands_whole_with_its_verdicts_offsets_and_outbox_in_order(db, database_url):
    epoch = claim(db, 0)
    task = state()
    command_id = uuid.uuid4()
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN command_outcomes")
        written = task_store.apply_batch(
            db,
            BatchWrite(
                group=GROUP,
                epochs={0: epoch},
                saved=[task],
                outcomes=[verdict(task, command_id)],
                offsets={("tasks.commands", 0): 41},
                outbox=[(0, "tasks.events", str(task.task_id), b"first"), (0, "t", "k", b"2nd")],
            ),
        )
        notes = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert written.fenced == []
    assert len(written.outbox_ids) == 2 and written.outbox_ids == sorted(written.outbox_ids)
    assert task_store.load(db, [task.task_id]) == {task.task_id: task}
    sent_id, outcome, sent_row = parse_notification(notes[0])
    assert (sent_id, outcome) == (str(command_id), "APPLIED")
    assert sent_row == read_row(db, task.task_id)  # the waiter needs no read
    with db.transaction() as conn:
        assert offsets.load(conn, GROUP, "tasks.commands") == {0: 42}
        assert task_store.pending_outbox(conn, 0) == [
            (written.outbox_ids[0], 0, "tasks.events", str(task.task_id), b"first"),
            (written.outbox_ids[1], 0, "t", "k", b"2nd"),
        ]

    # The next batch deletes what was published, updates the row and stores no verdict twice.
    done = replace(task, status=TaskStatus.COMPLETED, version=2, progress=100.0)
    again = task_store.apply_batch(
        db,
        BatchWrite(
            group=GROUP,
            epochs={0: epoch},
            published=written.outbox_ids,
            saved=[done],
            outcomes=[verdict(task, command_id)],  # a replayed verdict
            offsets={("tasks.commands", 0): 40, ("inference.status", 0): 3},
        ),
    )
    assert again.fenced == [] and again.outbox_ids == []
    assert task_store.load(db, [task.task_id]) == {task.task_id: done}
    assert rows(db, "SELECT count(*) FROM command_outcomes") == [(1,)]
    assert rows(db, "SELECT count(*) FROM outbox") == [(0,)]
    with db.transaction() as conn:  # offsets never move back
        assert offsets.load(conn, GROUP, "tasks.commands") == {0: 42}
        assert offsets.load(conn, GROUP, "inference.status") == {0: 4}


def read_row(db, task_id: uuid.UUID) -> dict:
    query = sql.SQL("SELECT {} FROM tasks WHERE id = %s").format(
        sql.SQL(", ").join(map(sql.Identifier, READ_COLUMNS))
    )
    return dict(zip(READ_COLUMNS, db.execute(query, (task_id,))[0], strict=True))


def test_a_task_too_big_to_notify_is_left_to_a_read(db, database_url):
    epoch = claim(db, 0)
    task = state(fields={"prompt": "x" * NOTIFY_ROW_BYTES})
    command_id = uuid.uuid4()
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN command_outcomes")
        task_store.apply_batch(
            db,
            BatchWrite(
                group=GROUP, epochs={0: epoch}, saved=[task], outcomes=[verdict(task, command_id)]
            ),
        )
        notes = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert notes == [f"{command_id} APPLIED"]
    assert read_row(db, task.task_id)["fields"] == task.fields


def test_a_verdict_that_changes_no_task_is_stored_and_sent_without_a_row(db, database_url):
    """A rejected command's batch has a verdict and nothing else (no state, no outbox)."""
    epoch = claim(db, 1)
    task = state()
    command_id = uuid.uuid4()
    rejected = CommandOutcome(
        command_id=command_id,
        task_id=task.task_id,
        command_type="CancelTask",
        outcome=CommandOutcomeKind.REJECTED,
        reason="task is COMPLETED",
        status_code=409,
        timestamp=NOW,
    )
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN command_outcomes")
        written = task_store.apply_batch(
            db, BatchWrite(group=GROUP, epochs={1: epoch}, outcomes=[rejected])
        )
        notes = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert (written.fenced, written.present, written.outbox_ids) == ([], [], [])
    assert notes == [f"{command_id} REJECTED"]
    assert rows(db, "SELECT outcome, reason, status_code FROM command_outcomes") == [
        ("REJECTED", "task is COMPLETED", 409)
    ]
    assert rows(db, "SELECT count(*) FROM tasks") == [(0,)]


def test_every_json_value_a_task_may_hold_round_trips(db):
    """Task rows travel to Postgres as one JSON array: orjson's, or `json`'s for the values
    orjson refuses (integers beyond 64 bits), so no batch fails on what a client sent."""
    epoch = claim(db, 0)
    later = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    plain = state(
        status=TaskStatus.FAILED,
        started_at=later,
        completed_at=later,
        error_message='line one\nline "two" \u00fc',
        error_category=ErrorCategory.PROVIDER,
        fields={
            "prompt": "\u00fcn\u00efc\u00f8de \U0001f600",
            "nested": {"a": [1, 2.5, None, True]},
        },
    )
    huge = state(fields={"seed": 2**70, "negative": -(2**64)})
    for task in (plain, huge):
        task_store.apply_batch(db, BatchWrite(group=GROUP, epochs={0: epoch}, saved=[task]))
        assert task_store.load(db, [task.task_id]) == {task.task_id: task}


def test_a_member_that_lost_a_partition_writes_nothing(db):
    old = claim(db, 1)
    mine = claim(db, 2)
    claim(db, 1)  # another member took partition 1 over
    task = state()
    before = rows(db, "SELECT count(*) FROM consumed_offsets")
    written = task_store.apply_batch(
        db,
        BatchWrite(
            group=GROUP,
            epochs={1: old, 2: mine},
            saved=[task],
            outcomes=[verdict(task, uuid.uuid4())],
            offsets={("tasks.commands", 1): 7, ("tasks.commands", 2): 9},
            outbox=[(2, "tasks.events", "k", b"v")],
            pending={2: PendingCounts({"*|total|": 1}, {"tasks.commands": 9}, 0.0)},
        ),
    )
    assert written.fenced == [1] and written.outbox_ids == []
    assert task_store.load(db, [task.task_id]) == {}
    assert rows(db, "SELECT count(*) FROM command_outcomes") == [(0,)]
    assert rows(db, "SELECT count(*) FROM outbox") == [(0,)]
    assert rows(db, "SELECT count(*) FROM consumed_offsets") == before
    assert rows(db, "SELECT count(*) FROM pending_counts") == [(0,)]
    # A partition never claimed is not ours either.
    assert task_store.apply_batch(db, BatchWrite(group=GROUP, epochs={5: 1})).fenced == [5]


def test_a_batch_that_took_an_existing_task_for_new_writes_nothing(db):
    epoch = claim(db, 4)
    old = state(status=TaskStatus.COMPLETED, version=3)
    task_store.apply_batch(db, BatchWrite(group=GROUP, epochs={4: epoch}, saved=[old]))
    new = state()
    taken_for_new = replace(old, status=TaskStatus.PENDING, version=1)
    command_id = uuid.uuid4()
    written = task_store.apply_batch(
        db,
        BatchWrite(
            group=GROUP,
            epochs={4: epoch},
            absent=[new.task_id, old.task_id],
            saved=[new, taken_for_new],
            outcomes=[verdict(taken_for_new, command_id)],
            offsets={("tasks.commands", 4): 21},
            outbox=[(4, "tasks.events", "k", b"v")],
        ),
    )
    assert written.present == [old.task_id] and written.fenced == []
    assert written.outbox_ids == []
    assert task_store.load(db, [old.task_id, new.task_id]) == {old.task_id: old}
    assert rows(db, "SELECT count(*) FROM command_outcomes") == [(0,)]
    assert rows(db, "SELECT count(*) FROM outbox") == [(0,)]
    assert rows(db, "SELECT count(*) FROM consumed_offsets WHERE partition = 4") == [(0,)]
    # decided again with the task read, the batch lands
    written = task_store.apply_batch(
        db, BatchWrite(group=GROUP, epochs={4: epoch}, absent=[new.task_id], saved=[new])
    )
    assert written.present == [] and task_store.load(db, [new.task_id]) == {new.task_id: new}


def test_a_hard_delete_removes_the_row(db):
    epoch = claim(db, 0)
    task = state()
    task_store.apply_batch(db, BatchWrite(group=GROUP, epochs={0: epoch}, saved=[task]))
    task_store.apply_batch(db, BatchWrite(group=GROUP, epochs={0: epoch}, deleted=[task.task_id]))
    assert task_store.load(db, [task.task_id]) == {}


def test_pending_counts_are_kept_until_a_batch_moves_them_to_the_outbox(db):
    epoch = claim(db, 3)
    first = PendingCounts({"*|total|": 2, "*|status|PENDING": 2}, {"tasks.commands": 11}, 1.0)
    task_store.apply_batch(db, BatchWrite(group=GROUP, epochs={3: epoch}, pending={3: first}))
    summed = PendingCounts({"*|total|": 3}, {"tasks.commands": 12, "inference.status": 4}, 1.0)
    task_store.apply_batch(db, BatchWrite(group=GROUP, epochs={3: epoch}, pending={3: summed}))
    with db.transaction() as conn:  # what the partition's next owner starts from
        assert task_store.pending_counts(conn, GROUP, [3, 4], since=7.0) == {
            3: replace(summed, since=7.0)
        }
    written = task_store.apply_batch(
        db,
        BatchWrite(
            group=GROUP,
            epochs={3: epoch},
            flushed=[3],
            outbox=[(3, "tasks.counts", "3", b"delta")],
        ),
    )
    assert len(written.outbox_ids) == 1
    assert rows(db, "SELECT count(*) FROM pending_counts") == [(0,)]
    assert rows(db, "SELECT partition, topic, value FROM outbox") == [(3, "tasks.counts", b"delta")]
