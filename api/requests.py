"""What a request brings, parsed or refused as FastAPI would: a JSON body and query
parameters against pydantic models (422 `HTTPValidationError` naming each field), multipart
file parts, and the admin role."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, web
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from api.keys import PRINCIPAL
from api.responses import field_error, problem
from api.task_bodies import NUL_MESSAGE, has_nul


def validation_error(exc: ValidationError, where: str) -> web.HTTPException:
    """FastAPI's `HTTPValidationError` body: {"detail": [{"loc", "msg", "type"}]}."""
    detail = [_error_at(where, e) for e in exc.errors(include_url=False)]
    return problem(web.HTTPUnprocessableEntity, detail)


def _error_at(where: str, e: ErrorDetails) -> dict[str, Any]:
    """One pydantic error as FastAPI places it. A discriminated union's missing or unknown
    tag (`task_type`) is an error of that field, as it would be for a plain enum field."""
    loc: list[Any] = [where, *e["loc"]]
    if e["type"] == "union_tag_not_found":
        return {"loc": [*loc, _tag_field(e)], "msg": "Field required", "type": "missing"}
    if e["type"] == "union_tag_invalid":
        # the expected tags come as enum reprs: <TaskType.GENERATION: 'GENERATION'>, ...
        tags = [f"'{t}'" for t in re.findall(r": '([^']*)'>", e["ctx"]["expected_tags"])]
        if tags:
            expected = ", ".join(tags[:-1]) + f" or {tags[-1]}" if len(tags) > 1 else tags[0]
            msg = f"Input should be {expected}"
            return {"loc": [*loc, _tag_field(e)], "msg": msg, "type": "enum"}
    return {"loc": loc, "msg": e["msg"], "type": e["type"]}


def _tag_field(e: ErrorDetails) -> str:
    return e["ctx"]["discriminator"].strip("'")


async def parse_body(request: web.Request, adapter: TypeAdapter | type[BaseModel]) -> Any:
    raw = await request.read()
    if has_nul(raw.decode("utf-8", errors="replace")):
        raise field_error(["body"], NUL_MESSAGE, "string_nul")
    try:
        if isinstance(adapter, TypeAdapter):
            return adapter.validate_json(raw)
        return adapter.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(exc, "body") from None


async def multipart_parts(request: web.Request) -> AsyncIterator[BodyPartReader]:
    """The parts of a multipart/form-data body, as they arrive: 415 for another body, 400
    for one that is not well formed (no boundary, or a body that does not start with it)."""
    if not request.content_type.startswith("multipart/"):
        raise problem(web.HTTPUnsupportedMediaType, "send multipart/form-data with a 'file' part")
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader):  # a nested multipart is no file
                yield part
    except ValueError as exc:  # aiohttp's word for a malformed multipart body
        raise problem(web.HTTPBadRequest, f"malformed multipart body: {exc}") from None


def parse_query(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_error(exc, "query") from None


def require_admin(request: web.Request) -> None:
    if not request[PRINCIPAL].is_admin:
        raise problem(web.HTTPForbidden, "this route needs an admin token")
