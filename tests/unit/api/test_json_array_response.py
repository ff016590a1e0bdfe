"""Lists are written batch by batch; a failure before the first byte is an ordinary error
answer, one after it cuts the connection instead of ending a valid-looking short list."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import json_errors
from api.responses import json_array_response
from state.db import DatabaseUnavailable


def _app(batches) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await json_array_response(request, batches(), lambda n: {"n": n})

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/x", handler)
    return app


async def test_batches_make_one_json_array_and_none_an_empty_one():
    async def three():
        yield [1, 2]
        yield []
        yield [3]

    async def none():
        return
        yield

    async with TestClient(TestServer(_app(three))) as client:
        response = await client.get("/x")
        assert response.status == 200 and response.content_type == "application/json"
        assert await response.json() == [{"n": 1}, {"n": 2}, {"n": 3}]
    async with TestClient(TestServer(_app(none))) as client:
        assert await (await client.get("/x")).json() == []


async def test_a_failure_before_the_first_batch_is_an_error_answer():
    async def failing():
        raise DatabaseUnavailable("no answer within 10 s")
        yield

    async with TestClient(TestServer(_app(failing))) as client:
        response = await client.get("/x")
        assert response.status == 503
        assert "the database is unavailable" in (await response.json())["detail"]


async def test_a_failure_after_the_first_batch_cuts_the_body(caplog):
    async def failing_late():
        yield [1, 2]
        raise DatabaseUnavailable("no answer within 10 s")

    async with TestClient(TestServer(_app(failing_late))) as client:
        with caplog.at_level(logging.ERROR, logger="api.responses"):
            response = await client.get("/x")
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    assert "GET /x failed while answering; cutting the connection" in caplog.text
