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


def problem(exc_type: type[web.HTTPException], detail: Any, **kwargs: Any) -> web.HTTPException:
    """An HTTP error whose JSON body says what is wrong: `{"detail": detail}`."""
    return exc_type(text=json.dumps({"detail": detail}), content_type="application/json", **kwargs)


def field_error(loc: list[str | int], msg: str, kind: str) -> web.HTTPException:
    """422 with FastAPI's `HTTPValidationError` body for one field:
    `{"detail": [{"loc", "msg", "type"}]}`."""
    return problem(web.HTTPUnprocessableEntity, [{"loc": loc, "msg": msg, "type": kind}])
