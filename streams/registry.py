"""Schema-registry clients behind one small interface.

`HttpSchemaRegistry` speaks the Confluent REST API, so it serves both a real Confluent
Schema Registry and taskstream's built-in registry (`api/schema_registry.py`, stored in
Postgres). Both are used synchronously: registration happens at start-up and lookups by
id are cached for the life of the process (schema ids are immutable).
"""

from __future__ import annotations

import threading
import warnings
from typing import Protocol

import authlib.deprecate  # noqa: F401 - installs authlib's "always" filter, which ours must follow
import httpx

with warnings.catch_warnings():
    # authlib, which the registry client imports, deprecates its own httpx shim on import.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError


class RegistryError(Exception):
    """A schema registry refused a request or could not be reached."""


# The client's refusals, and its transport's failures to reach the registry at all: httpx's
# (connection refused while the embedded API is still starting, timeouts) are not OSErrors.
_FAILED = (SchemaRegistryError, OSError, httpx.TransportError)


class SchemaRegistry(Protocol):
    """Implementations raise `RegistryError` (or a subclass) for every refusal."""

    def register(self, subject: str, schema: str) -> int:
        """Register an Avro schema under `subject` (idempotent); return its global id."""
        ...

    def schema_by_id(self, schema_id: int) -> str:
        """The Avro schema text with this global id."""
        ...


class HttpSchemaRegistry:
    """A Confluent-compatible registry reached over HTTP."""

    def __init__(self, url: str, basic_auth: str | None = None) -> None:
        conf = {"url": url}
        if basic_auth:
            conf["basic.auth.user.info"] = basic_auth
        self._client = SchemaRegistryClient(conf)
        self._by_id: dict[int, str] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema: str) -> int:
        try:
            return self._client.register_schema(subject, Schema(schema, "AVRO"))
        except _FAILED as exc:
            raise RegistryError(f"registering {subject}: {exc}") from exc

    def schema_by_id(self, schema_id: int) -> str:
        with self._lock:
            if schema_id in self._by_id:
                return self._by_id[schema_id]
        try:
            text = self._client.get_schema(schema_id).schema_str
        except _FAILED as exc:
            raise RegistryError(f"schema id {schema_id}: {exc}") from exc
        with self._lock:
            self._by_id[schema_id] = text
        return text

    def close(self) -> None:
        self._client.close()

    def subjects(self) -> list[str]:
        try:
            return list(self._client.get_subjects())
        except _FAILED as exc:
            raise RegistryError(f"listing subjects: {exc}") from exc
