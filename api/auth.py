"""Bearer-token authentication with roles and tenants.

Tokens are 256-bit random strings stored as SHA-256 digests (`api_tokens`). Clients send
`Authorization: Bearer <token>`; schema-registry clients, which only speak basic auth, send
the token as the password (`basic.auth.user.info = "any-name:<token>"`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from psycopg import sql

from state.db import AsyncDatabase

_CACHE_TTL_S = 30.0  # a revoked token keeps working at most this long
#: What `TokenStore.list` and `revoke` give of a token, in this order (`api.admin.TokenInfo`).
INFO_COLUMNS = ("token_hash", "tenant", "role", "label", "created_at", "revoked_at")
_INFO = sql.SQL(", ").join(map(sql.Identifier, INFO_COLUMNS))


@dataclass(frozen=True)
class Principal:
    role: str  # "admin" or "user"
    tenant: str | None
    token_id: str | None = None  # the SHA-256 of the token it authenticated with

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_from_header(header: str | None) -> str | None:
    """The token in an Authorization header (Bearer, or Basic with the token as password)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


class TokenStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self._db = db
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def ensure(
        self, token: str, role: str, tenant: str | None = None, label: str | None = None
    ) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO api_tokens (token_hash, role, tenant, label) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (token_hash) DO NOTHING",
                (hash_token(token), role, tenant, label),
            )

    async def authenticate(self, token: str) -> Principal | None:
        digest = hash_token(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached and now - cached[0] < _CACHE_TTL_S:
            return cached[1]
        row = await self._db.fetchone(
            "SELECT token_hash, role, tenant FROM api_tokens"
            " WHERE token_hash = %s AND revoked_at IS NULL",
            (digest,),
        )
        principal = (
            Principal(row[1], row[2], digest)
            if row and hmac.compare_digest(row[0], digest)
            else None
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, principal)
        return principal

    async def list(self, tenant: str | None, include_revoked: bool, limit: int, skip: int) -> list:
        """Tokens as (token_id, tenant, role, label, created_at, revoked_at), newest first."""
        return await self._db.fetchall(
            sql.SQL(
                "SELECT {} FROM api_tokens WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)"
                " AND (%(all)s OR revoked_at IS NULL)"
                " ORDER BY created_at DESC, token_hash LIMIT %(limit)s OFFSET %(skip)s"
            ).format(_INFO),
            {"tenant": tenant, "all": include_revoked, "limit": limit, "skip": skip},
        )

    async def revoke(self, token_id: str) -> tuple | None:
        """Revoke a token by its SHA-256 (a second revoke keeps the first time): its row as
        `list` gives it, or None if there is no such token. Takes effect at once in this
        process; other API processes drop their cached answer within `_CACHE_TTL_S`."""
        async with self._db.transaction() as conn:
            row = await (
                await conn.execute(
                    sql.SQL(
                        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())"
                        " WHERE token_hash = %s RETURNING {}"
                    ).format(_INFO),
                    (token_id,),
                )
            ).fetchone()
        self._cache.pop(token_id, None)
        return row
