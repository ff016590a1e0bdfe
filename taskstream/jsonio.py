"""JSON on the hot paths (the API's answers, the task processor's rows for Postgres): orjson,
several times faster than `json` for the same text.

orjson refuses integers beyond 64 bits, which a task's free-form fields may hold (Postgres's
jsonb keeps them), so `dumps` falls back to `json` for a value orjson will not write, rather
than failing on what a client sent. The fallback writes the types orjson writes itself
(datetimes, UUIDs) the same way, so a caller never sees which of the two wrote its text.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any
from uuid import UUID

import orjson

loads = orjson.loads


def dumps(value: Any) -> str:
    """`value` as JSON text (str subclasses such as StrEnum members as their value)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, default=_as_orjson_writes)


def _as_orjson_writes(value: object) -> str:
    if isinstance(value, date):  # datetimes too: RFC 3339, as orjson writes them
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
