"""JSON answers, written with orjson (`taskstream.jsonio`): every create answers with its
task, so the API's JSON writing is on the hot path."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from taskstream import jsonio


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=jsonio.dumps)


def field_error(loc: list[str | int], msg: str, kind: str) -> web.HTTPUnprocessableEntity:
    """422 with FastAPI's `HTTPValidationError` body for one field:
    `{"detail": [{"loc", "msg", "type"}]}`."""
    body = {"detail": [{"loc": loc, "msg": msg, "type": kind}]}
    return web.HTTPUnprocessableEntity(text=json.dumps(body), content_type="application/json")
