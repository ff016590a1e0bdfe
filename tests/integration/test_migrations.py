"""Forward-only migrations and the consumed-offsets table, against real Postgres."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from state import offsets, task_store
from state.db import DatabaseError
from state.migrations import MigrationError, available, migrate
from state.task_store import BatchWrite


def test_migrations_apply_once(db):
    # The fixture already migrated this database: a second run is a no-op.
    assert migrate(db) == []
    with db.transaction() as conn:
        versions = [
            r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        ]
    assert versions == [m.version for m in available()]


def test_an_applied_migration_that_changed_is_refused(db):
    with db.transaction() as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(db)


def test_offsets_move_forward_only(db):
    with db.transaction() as conn:
        epoch = task_store.claim(conn, "g", 0, "member")
        other = task_store.claim(conn, "g", 3, "member")
    for applied in ({("t", 0): 41}, {("t", 0): 9, ("t", 3): 7}):  # 9: a replayed older message
        task_store.apply_batch(
            db, BatchWrite(group="g", epochs={0: epoch, 3: other}, offsets=applied)
        )
    with db.transaction() as conn:
        assert offsets.load(conn, "g", "t") == {0: 42, 3: 8}
        assert offsets.load(conn, "other", "t") == {}


def test_offsets_roll_back_with_the_state(db):
    with db.transaction() as conn:
        epoch = task_store.claim(conn, "g", 0, "member")
    broken = {"task_id": uuid.uuid4(), "task_type": None}  # violates tasks.task_type NOT NULL
    with pytest.raises(DatabaseError):
        task_store.apply_batch(
            db,
            BatchWrite(
                group="g",
                epochs={0: epoch},
                saved=[SimpleNamespace(**broken)],  # the projection failed half-way
                offsets={("t", 0): 5},
            ),
        )
    with db.transaction() as conn:
        assert offsets.load(conn, "g", "t") == {}
