"""Errors a handler did not mean leave as JSON too: an unreachable database is 503, anything
else 500, logged."""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import json_errors
from api.responses import refusal
from state.db import DatabaseUnavailable


async def _get(handler, caplog) -> tuple[int, dict, dict]:
    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/x", handler)
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.WARNING, logger="api.app"):
            response = await client.get("/x")
            return response.status, await response.json(), dict(response.headers)


async def test_an_unreachable_database_is_503_with_retry_after(caplog):
    async def handler(request: web.Request) -> web.Response:
        raise DatabaseUnavailable("no answer within 10 s")

    status, body, headers = await _get(handler, caplog)
    assert (status, body) == (
        503,
        {"detail": "the database is unavailable (no answer within 10 s)"},
    )
    assert headers["Retry-After"] == "5"
    assert "GET /x: the database is unavailable (no answer within 10 s)" in caplog.text


async def test_an_unexpected_error_is_a_json_500_and_logged_with_its_traceback(caplog):
    async def handler(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    status, body, _ = await _get(handler, caplog)
    assert (status, body) == (500, {"detail": "internal error; the server logged it"})
    [record] = [r for r in caplog.records if r.getMessage() == "GET /x failed"]
    assert record.exc_info[1].args == ("boom",)


def test_a_refused_command_keeps_the_documented_shape_of_its_status():
    unprocessable = refusal(422, "changes_json is not valid JSON")
    assert unprocessable.status == 422
    assert json.loads(unprocessable.body) == {
        "detail": [
            {"loc": ["body"], "msg": "changes_json is not valid JSON", "type": "value_error"}
        ]
    }
    conflict = refusal(409, "cannot cancel a COMPLETED task")
    assert (conflict.status, json.loads(conflict.body)) == (
        409,
        {"detail": "cannot cancel a COMPLETED task"},
    )
