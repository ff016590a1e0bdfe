"""Forward-only SQL migrations: `state/sql/NNNN_name.sql`, applied in order, once.

A Postgres advisory lock serialises concurrent runners (every process may call `migrate` on
start). An applied file that was edited later is an error: write a new migration instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

from psycopg import sql

from state.db import Database

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x7A5C5EA1  # arbitrary, constant: the advisory lock taskstream migrations share


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql_text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql_text.encode()).hexdigest()


class MigrationError(Exception):
    pass


def available() -> list[Migration]:
    found = []
    for entry in resources.files("state.sql").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return found


def migrate(db: Database) -> list[str]:
    """Apply pending migrations; return the names applied now."""
    applied_now = []
    with db.transaction() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}
        for migration in available():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(f"{migration.name} changed after it was applied")
                continue
            conn.execute(sql.SQL(migration.sql_text))  # trusted file shipped with the code
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(migration.name)
    if applied_now:
        logger.info("applied migrations: %s", ", ".join(applied_now))
    return applied_now
