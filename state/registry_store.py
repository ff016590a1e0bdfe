"""Storage of the built-in schema registry: global schema ids, subjects and their versions.

Semantics follow Confluent's registry: registering a schema a subject already has returns
its id; a new schema must be BACKWARD compatible with the subject's latest version; the
same schema under two subjects shares one id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import fastavro
import psycopg
from psycopg import sql

from state.db import Database
from streams.compat import backward_problems
from streams.registry import RegistryError


class RegistryStoreError(RegistryError):
    """Base: `http_status` and Confluent `error_code` say how the REST layer answers.

    A `streams.registry.RegistryError`, as the `SchemaRegistry` protocol promises callers.
    """

    http_status = 500
    error_code = 50001


class InvalidSchema(RegistryStoreError):
    http_status = 422
    error_code = 42201


class SubjectNotFound(RegistryStoreError):
    http_status = 404
    error_code = 40401


class VersionNotFound(RegistryStoreError):
    http_status = 404
    error_code = 40402


class SchemaNotFound(RegistryStoreError):
    http_status = 404
    error_code = 40403


class IncompatibleSchema(RegistryStoreError):
    http_status = 409
    error_code = 409


@dataclass(frozen=True)
class SubjectVersion:
    subject: str
    version: int
    schema_id: int
    schema: str


def normalise(schema_text: str) -> tuple[str, str]:
    """Validate an Avro schema; return (compact text, fingerprint of its canonical form)."""
    try:
        parsed = json.loads(schema_text)
        canonical = fastavro.schema.to_parsing_canonical_form(
            fastavro.parse_schema(json.loads(schema_text))
        )
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
        raise InvalidSchema(f"not a valid Avro schema: {exc}") from exc
    # Two schemas with the same canonical form but different defaults or docs differ for
    # readers, so the fingerprint covers the full compact text as well.
    compact = json.dumps(parsed, separators=(",", ":"), sort_keys=True)
    return compact, hashlib.sha256((canonical + "\0" + compact).encode()).hexdigest()


# The (subject, version) rows with their schemas; callers add one of the fixed conditions below.
_VERSIONS = sql.SQL(
    "SELECT v.version, v.schema_id, s.schema_text FROM registry_versions v"
    " JOIN registry_schemas s ON s.id = v.schema_id WHERE v.subject = %s AND "
)
_BY_FINGERPRINT = sql.SQL("s.fingerprint = %s")
_BY_VERSION = sql.SQL("v.version = %s")
_LATEST = sql.SQL("TRUE ORDER BY v.version DESC LIMIT 1")


class RegistryStore:
    """Postgres-backed registry; also a `streams.registry.SchemaRegistry` for in-process use."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def register(self, subject: str, schema_text: str) -> int:
        compact, fingerprint = normalise(schema_text)
        with self._db.transaction() as conn:
            # One registration per subject at a time, so versions stay dense and ordered.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"registry:{subject}",))
            existing = _find(conn, subject, _BY_FINGERPRINT, fingerprint)
            if existing is not None:
                return existing.schema_id
            latest = _find(conn, subject, _LATEST)
            if latest is not None:
                problems = backward_problems(json.loads(compact), json.loads(latest.schema))
                if problems:
                    raise IncompatibleSchema(
                        f"schema is not backward compatible with {subject} v{latest.version}: "
                        + "; ".join(problems)
                    )
            # Another subject may hold the same schema already: it keeps its id.
            (schema_id,) = conn.execute(
                "INSERT INTO registry_schemas (fingerprint, schema_text) VALUES (%s, %s)"
                " ON CONFLICT (fingerprint) DO UPDATE SET fingerprint = EXCLUDED.fingerprint"
                " RETURNING id",
                (fingerprint, compact),
            ).fetchone()
            conn.execute(
                "INSERT INTO registry_versions (subject, version, schema_id) VALUES (%s, %s, %s)",
                (subject, (latest.version if latest else 0) + 1, schema_id),
            )
            return schema_id

    def lookup(self, subject: str, schema_text: str) -> SubjectVersion:
        """The subject's version holding exactly this schema."""
        _, fingerprint = normalise(schema_text)
        with self._db.transaction() as conn:
            found = _find(conn, subject, _BY_FINGERPRINT, fingerprint)
        if found is None:
            self.versions(subject)  # raises SubjectNotFound when the subject is unknown
            raise SchemaNotFound(f"schema not registered under {subject}")
        return found

    def schema_by_id(self, schema_id: int) -> str:
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT schema_text FROM registry_schemas WHERE id = %s", (schema_id,)
            ).fetchone()
        if row is None:
            raise SchemaNotFound(f"schema {schema_id} not found")
        return row[0]

    def subjects(self) -> list[str]:
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT DISTINCT subject FROM registry_versions ORDER BY subject"
            ).fetchall()
        return [r[0] for r in rows]

    def versions(self, subject: str) -> list[int]:
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT version FROM registry_versions WHERE subject = %s ORDER BY version",
                (subject,),
            ).fetchall()
        if not rows:
            raise SubjectNotFound(f"subject {subject} not found")
        return [r[0] for r in rows]

    def version(self, subject: str, version: int | str) -> SubjectVersion:
        """`version` is a number or "latest" (also -1, as Confluent accepts)."""
        with self._db.transaction() as conn:
            if version in ("latest", -1, "-1"):
                found = _find(conn, subject, _LATEST)
            else:
                found = _find(conn, subject, _BY_VERSION, _version_number(version))
        if found is None:
            self.versions(subject)  # raises SubjectNotFound when the subject is unknown
            raise VersionNotFound(f"version {version} of {subject} not found")
        return found

    def is_compatible(
        self, subject: str, version: int | str, schema_text: str
    ) -> tuple[bool, list[str]]:
        compact, _ = normalise(schema_text)
        existing = self.version(subject, version)
        problems = backward_problems(json.loads(compact), json.loads(existing.schema))
        return not problems, problems


def _find(
    conn: psycopg.Connection, subject: str, condition: sql.SQL, *params: object
) -> SubjectVersion | None:
    row = conn.execute(_VERSIONS + condition, (subject, *params)).fetchone()
    return SubjectVersion(subject, *row) if row else None


def _version_number(version: int | str) -> int:
    try:
        number = int(version)
    except ValueError:
        raise InvalidVersion(
            f"version must be a positive integer or 'latest', not {version!r}"
        ) from None
    if number < 1:
        raise InvalidVersion(f"version must be a positive integer or 'latest', not {version!r}")
    return number


class InvalidVersion(RegistryStoreError):
    http_status = 422
    error_code = 42202
