"""Signed storage URLs: what lets a browser load a task's media in `<img>`/`<video>`, which
cannot send an `Authorization` header.

A URL carries `expires` (unix seconds) and `signature` = HMAC-SHA256(key, "<path>\\n<expires>"),
hex. It grants GET and HEAD of that one path until it expires; the key is
`TASKSTREAM_URL_SIGNING_KEY`, or derived from the admin token so that every API instance of
a deployment agrees without more configuration.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import urlencode

DEFAULT_TTL_S = 3600


class UrlSigner:
    def __init__(self, key: bytes, ttl_s: int = DEFAULT_TTL_S) -> None:
        self._key = key
        self.ttl_s = ttl_s

    @classmethod
    def for_settings(cls, signing_key: str | None, admin_token: str | None) -> UrlSigner:
        if signing_key:
            return cls(signing_key.encode())
        if admin_token:
            derived = hmac.new(admin_token.encode(), b"taskstream storage urls", hashlib.sha256)
            return cls(derived.digest())
        return cls(secrets.token_bytes(32))  # this process only

    def _mac(self, path: str, expires: int) -> str:
        return hmac.new(self._key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def query(self, path: str, now: float | None = None) -> str:
        """The query string that signs `path` for `ttl_s` seconds."""
        expires = int((now if now is not None else time.time()) + self.ttl_s)
        return urlencode({"expires": expires, "signature": self._mac(path, expires)})

    def verify(
        self, path: str, expires: str | None, signature: str | None, now: float | None = None
    ) -> bool:
        if not expires or not signature or not expires.isdigit():
            return False
        if int(expires) < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(self._mac(path, int(expires)), signature)
