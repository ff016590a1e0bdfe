"""Image inputs: every image field accepts base64, a data URL, an http(s) URL or a storage path.

URLs are fetched with a size cap, a timeout and a content check, and hosts that resolve to
private, loopback or link-local addresses are refused unless the worker allows them (a task
must not be a way to read the cluster's internal services). The check is made on the
address the connection then uses, so a name that resolves to a public address for the check
and to an internal one for the connection (DNS rebinding) gets nowhere, and it is made on
every connection, so a public URL that redirects to an internal one is refused too. Fetches
ignore proxy settings: through a proxy the check would see the proxy, not the target.

A reference is a storage path when `state.storage.stored_key` says so. Every failure is a
`ValueError`, so the task fails at once with a VALIDATION error instead of being retried.
"""

from __future__ import annotations

import base64
import binascii
import functools
import http.client
import io
import ipaddress
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlparse

from PIL import Image, UnidentifiedImageError

from state.storage import BadKey, NotFound, Storage, stored_key

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 8192 * 8192


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = MAX_IMAGE_BYTES
    timeout_s: float = 10.0
    allow_private: bool = False


def load_image(ref: str, storage: Storage, policy: FetchPolicy) -> Image.Image:
    """Decode `ref` into an RGB image, or raise `ValueError` saying why not."""
    data = _bytes_of(ref.strip(), storage, policy)
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise ValueError(f"image is {image.width}x{image.height}, over {MAX_PIXELS} pixels")
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a decodable image: {exc}") from exc


def _bytes_of(ref: str, storage: Storage, policy: FetchPolicy) -> bytes:
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if ";base64" not in header:
            raise ValueError("data URLs must be base64-encoded")
        return _b64(payload, policy)
    scheme = urlparse(ref).scheme
    if scheme in ("http", "https"):
        return _fetch(ref, policy)
    if scheme:
        raise ValueError(f"image URLs must be http(s), not {scheme!r}")
    if (key := stored_key(ref)) is not None:
        try:
            return storage.get(key)
        except BadKey as exc:
            raise ValueError(f"bad storage path {ref!r}: {exc}") from exc
        except NotFound:
            raise ValueError(f"no stored image at {ref!r}") from None
    return _b64(ref, policy)


def _b64(payload: str, policy: FetchPolicy) -> bytes:
    if len(payload) * 3 // 4 > policy.max_bytes:
        raise ValueError(f"image is over {policy.max_bytes} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"neither a storage path nor valid base64: {exc}") from exc


def _fetch(url: str, policy: FetchPolicy) -> bytes:
    if not urlparse(url).hostname:
        raise ValueError(f"URL {url!r} has no host")
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        _CheckedHTTP(policy),
        _CheckedHTTPS(policy),
        _CheckedRedirects(),
    )
    try:
        with opener.open(url, timeout=policy.timeout_s) as resp:
            kind = resp.headers.get_content_type()
            if not kind.startswith("image/") and kind != "application/octet-stream":
                raise ValueError(f"{url} answered {kind}, not an image")
            data = resp.read(policy.max_bytes + 1)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ValueError(f"cannot fetch {url}: {exc}") from exc
    if len(data) > policy.max_bytes:
        raise ValueError(f"{url} is over {policy.max_bytes} bytes")
    return data


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) URLs only (urllib would follow one to ftp too); the
    connection to the new host is checked like the first."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urlparse(newurl)
        if target.scheme not in ("http", "https"):
            raise ValueError(f"{req.full_url} redirects to {target.scheme!r}, not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _CheckedHTTP(urllib.request.HTTPHandler):
    def __init__(self, policy: FetchPolicy) -> None:
        super().__init__()
        self._policy = policy

    def http_open(self, req):
        return self.do_open(_checked(http.client.HTTPConnection, self._policy), req)


class _CheckedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, policy: FetchPolicy) -> None:
        super().__init__()
        self._policy = policy

    def https_open(self, req):
        connection = _checked(http.client.HTTPSConnection, self._policy)
        return self.do_open(connection, req, context=self._context)


def _checked(connection_class: type, policy: FetchPolicy):
    """A factory of `connection_class` connections that open their socket with `_connect`
    (http.client opens every socket through the connection's `_create_connection`)."""

    def make(host: str, **kwargs: object) -> http.client.HTTPConnection:
        connection = connection_class(host, **kwargs)
        connection._create_connection = functools.partial(_connect, policy=policy)
        return connection

    return make


def _connect(
    address: tuple[str, int], timeout: float | None, source_address=None, *, policy: FetchPolicy
) -> socket.socket:
    """A socket connected to `address`'s host at an address that passed the check: the one
    lookup serves both, so the check holds for the connection it guards."""
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host}: {exc}") from exc
    if not policy.allow_private:
        for *_, sockaddr in infos:
            _refuse_private(host, sockaddr[0])
    error: OSError = OSError(f"{host} has no address")
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # what http.client passes unset
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


def _refuse_private(host: str, address: str) -> None:
    ip = ipaddress.ip_address(address.split("%")[0])
    if not ip.is_global:
        raise ValueError(
            f"{host} resolves to non-public address {ip}; private networks are refused"
        )
