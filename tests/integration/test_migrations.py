"""Forward-only migrations and the consumed-offsets table, against real Postgres."""

from __future__ import annotations

import pytest

from state import offsets
from state.migrations import MigrationError, available, migrate


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
        offsets.store(conn, "g", "t", 0, 41)
        offsets.store(conn, "g", "t", 0, 9)  # a replayed older message must not move it back
        offsets.store(conn, "g", "t", 3, 7)
        assert offsets.load(conn, "g", "t") == {0: 42, 3: 8}
        assert offsets.load(conn, "other", "t") == {}


def test_offsets_roll_back_with_the_transaction(db):
    with pytest.raises(RuntimeError), db.transaction() as conn:
        offsets.store(conn, "g", "t", 0, 5)
        raise RuntimeError("the projection failed half-way")
    with db.transaction() as conn:
        assert offsets.load(conn, "g", "t") == {}
