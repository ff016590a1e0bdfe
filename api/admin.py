"""Admin routes: issuing, listing and revoking API tokens."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from api.auth import hash_token, new_token
from api.field_types import Offset
from api.keys import PRINCIPAL, TOKENS
from api.openapi import documented
from api.requests import parse_body, parse_query, require_admin
from api.responses import field_error, json_response, problem
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


TOKEN_ID = Field(
    description="The token's SHA-256 (hex), which is all that is stored: it names the token"
    ' here, and `printf %s "$TOKEN" | sha256sum` gives it from the token'
)
_TOKEN_ID = re.compile(r"[0-9a-f]{64}")


class TokenResponse(BaseModel):
    token: str
    token_id: str = TOKEN_ID
    tenant: str
    role: str


class TokenInfo(BaseModel):
    token_id: str = TOKEN_ID
    tenant: str | None
    role: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


class TokenQuery(BaseModel):
    tenant: str | None = None
    include_revoked: bool = False
    limit: int = Field(100, ge=1, le=1000, description="Maximum number of tokens to return")
    skip: Offset = 0


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
    answer = TokenResponse(
        token=token, token_id=hash_token(token), tenant=body.tenant, role=body.role
    )
    return json_response(answer.model_dump(), status=201)


@routes.get("/api/v1/admin/tokens")
@documented("List API Tokens", "admin", query=TokenQuery, response=list[TokenInfo], errors=(403,))
async def list_tokens(request: web.Request) -> web.Response:
    """Tokens issued (not the tokens themselves), newest first; revoked ones only with
    `include_revoked=true`."""
    require_admin(request)
    query: TokenQuery = parse_query(request, TokenQuery)
    rows = await request.app[TOKENS].list(
        query.tenant, query.include_revoked, query.limit, query.skip
    )
    return json_response([_info(row) for row in rows])


@routes.delete("/api/v1/admin/tokens/{token_id}")
@documented("Revoke API Token", "admin", response=TokenInfo, errors=(403, 409))
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke a token: it authenticates nothing from now on (other API processes may accept
    it for up to 30 s more, from their cache). Revoking it again changes nothing."""
    require_admin(request)
    token_id = request.match_info["token_id"]
    if not _TOKEN_ID.fullmatch(token_id):
        raise field_error(
            ["path", "token_id"], "a token id is 64 lowercase hex digits (its SHA-256)", "pattern"
        )
    if token_id == request[PRINCIPAL].token_id:
        raise problem(web.HTTPConflict, "a token cannot revoke itself; use another admin token")
    row = await request.app[TOKENS].revoke(token_id)
    if row is None:
        raise problem(web.HTTPNotFound, f"token {token_id} not found")
    return json_response(_info(row))


def _info(row: tuple) -> dict:
    return TokenInfo(**dict(zip(TokenInfo.model_fields, row, strict=True))).model_dump(mode="json")
