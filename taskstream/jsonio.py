"""JSON on the hot paths (the API's answers, the task processor's rows for Postgres): orjson,
several times faster than `json` for the same text.

orjson refuses integers beyond 64 bits, which a task's free-form fields may hold (Postgres's
jsonb keeps them), so `dumps` falls back to `json` for a value orjson will not write, rather
than failing on what a client sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

loads = orjson.loads


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """`value` as JSON text. orjson writes datetimes (RFC 3339), UUIDs, enums and dataclasses
    itself; `default` serves `json` in the fallback."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, default=default)
