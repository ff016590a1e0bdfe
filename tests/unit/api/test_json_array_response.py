"""Lists are written as they are made; a failure before the first write is an ordinary error
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


def _app(batches, pad: int = 0) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await json_array_response(request, batches(), lambda n: {"n": n, "p": "x" * pad})

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
        assert await response.json() == [{"n": n, "p": ""} for n in (1, 2, 3)]
    async with TestClient(TestServer(_app(none))) as client:
        assert await (await client.get("/x")).json() == []


@pytest.mark.parametrize("before", [[], [1, 2]])
async def test_a_failure_before_the_first_write_is_an_error_answer(before):
    async def failing():
        yield before
        raise DatabaseUnavailable("no answer within 10 s")

    async with TestClient(TestServer(_app(failing))) as client:
        response = await client.get("/x")
        assert response.status == 503
        assert "the database is unavailable" in (await response.json())["detail"]


async def test_a_failure_after_the_first_write_cuts_the_body(caplog):
    async def failing_late():
        yield [1, 2]  # 2 x 40 KB: more than is held back before a write
        raise DatabaseUnavailable("no answer within 10 s")

    async with TestClient(TestServer(_app(failing_late, pad=40_000))) as client:
        with caplog.at_level(logging.ERROR, logger="api.responses"):
            response = await client.get("/x")
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    assert "GET /x failed while answering; cutting the connection" in caplog.text
