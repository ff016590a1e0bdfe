"""JSON answers, written with orjson (`taskstream.jsonio`): every create answers with its
task, so the API's JSON writing is on the hot path."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from taskstream import jsonio

logger = logging.getLogger(__name__)


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


async def json_array_response(
    request: web.Request,
    batches: AsyncIterator[Iterable[Any]],
    render: Callable[[Any], Any] = lambda item: item,
) -> web.StreamResponse:
    """A JSON array of `render(item)` for every item of `batches`, written batch by batch:
    a list of a thousand tasks near the body limit is ~0.7 GB of JSON, which built whole
    took ~4x that in memory. Nothing is sent before the first batch is read, so a failure
    there is still an ordinary error answer; a failure after it cuts the connection, and
    the client sees a truncated body rather than a valid-looking short list."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    opening = b"["
    try:
        async for batch in batches:
            text = b",".join(jsonio.dumps(render(item)).encode() for item in batch)
            if not text:
                continue
            if not response.prepared:
                await response.prepare(request)
            await response.write(opening + text)
            opening = b","
    except Exception:
        if not response.prepared:
            raise
        logger.exception(
            "%s %s failed while answering; cutting the connection", request.method, request.path
        )
        if request.transport is not None:
            request.transport.close()
        return response
    if not response.prepared:
        await response.prepare(request)
    await response.write(b"[]" if opening == b"[" else b"]")
    await response.write_eof()
    return response
