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


def one_error(loc: list[str | int], msg: str, kind: str) -> list[dict[str, Any]]:
    """The `detail` of FastAPI's `HTTPValidationError` for one field."""
    return [{"loc": loc, "msg": msg, "type": kind}]


def field_error(loc: list[str | int], msg: str, kind: str) -> web.HTTPException:
    """422 with FastAPI's `HTTPValidationError` body for one field:
    `{"detail": [{"loc", "msg", "type"}]}`."""
    return problem(web.HTTPUnprocessableEntity, one_error(loc, msg, kind))


def refusal(status: int, reason: str) -> web.Response:
    """A command the task processor refused, with its reason as `detail`; a 422 keeps its
    documented shape, `HTTPValidationError`, with the reason as the body's message."""
    detail = one_error(["body"], reason, "value_error") if status == 422 else reason
    return json_response({"detail": detail}, status=status)


#: `json_array_response` writes when this much is ready (and at the end).
WRITE_BYTES = 64 * 1024


async def json_array_response(
    request: web.Request,
    batches: AsyncIterator[Iterable[Any]],
    render: Callable[[Any], Any],
) -> web.StreamResponse:
    """A JSON array of `render(item)` for every item of `batches`, written as it is made:
    a list of a thousand tasks near the body limit is ~0.7 GB of JSON, which built whole
    took ~4x that in memory. Nothing is sent before the first write, so a failure until
    then is still an ordinary error answer; a failure after it cuts the connection, and the
    client sees a truncated body rather than a valid-looking short list."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    ready: list[bytes] = [b"["]
    size, first = 0, True

    async def write() -> None:
        nonlocal size
        if not response.prepared:
            await response.prepare(request)
        await response.write(b"".join(ready))
        ready.clear()
        size = 0

    try:
        async for batch in batches:
            for item in batch:
                text = jsonio.dumps(render(item)).encode()
                if not first:
                    ready.append(b",")
                ready.append(text)
                size, first = size + len(text), False
                if size >= WRITE_BYTES:
                    await write()
    except Exception:
        if not response.prepared:
            raise
        logger.exception(
            "%s %s failed while answering; cutting the connection", request.method, request.path
        )
        if request.transport is not None:
            request.transport.close()
        return response
    ready.append(b"]")
    await write()
    await response.write_eof()
    return response
