"""Admin routes: issuing API tokens."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from api.auth import new_token
from api.keys import TOKENS
from api.openapi import documented
from api.responses import json_response
from api.tasks import parse_body, require_admin
from state.storage import MAX_SEGMENT_LENGTH, SEGMENT_PATTERN

routes = web.RouteTableDef()


class TokenRequest(BaseModel):
    tenant: str = Field(
        ...,
        min_length=1,
        max_length=MAX_SEGMENT_LENGTH,
        pattern=SEGMENT_PATTERN,
        description="Letters, digits and . _ = + - (it names the upload folder uploads/<tenant>/)",
    )
    role: Literal["user", "admin"] = "user"
    label: str | None = Field(None, max_length=255)


class TokenResponse(BaseModel):
    token: str
    tenant: str
    role: str


@routes.post("/api/v1/admin/tokens")
@documented(
    "Issue API Token", "admin", body=TokenRequest, response=TokenResponse, status=201, errors=(403,)
)
async def issue_token(request: web.Request) -> web.Response:
    """A new token for a tenant. Shown once: only its SHA-256 is stored."""
    require_admin(request)
    body: TokenRequest = await parse_body(request, TokenRequest)
    token = new_token()
    await request.app[TOKENS].ensure(token, body.role, body.tenant, body.label)
    return json_response({"token": token, "tenant": body.tenant, "role": body.role}, status=201)
