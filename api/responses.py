"""JSON answers, written with orjson (`taskstream.jsonio`): every create answers with its
task, so the API's JSON writing is on the hot path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from taskstream import jsonio


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=jsonio.dumps)
