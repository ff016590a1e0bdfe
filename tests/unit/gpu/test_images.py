"""Image inputs in every accepted form, and the refusals (all `ValueError`: VALIDATION)."""

from __future__ import annotations

import base64
import http.server
import io
import socket
import threading
from collections.abc import Iterator

import pytest
from PIL import Image

from gpu import images
from gpu.images import FetchPolicy, load_image
from state.storage import LocalStorage


@pytest.fixture
def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 2), "red").save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def store(tmp_path) -> LocalStorage:
    return LocalStorage(tmp_path)


def test_base64_data_url_and_storage_path(png, store):
    store.put("generations/t/result.png", png)
    b64 = base64.b64encode(png).decode()
    for ref in (b64, f"data:image/png;base64,{b64}", "generations/t/result.png"):
        image = load_image(ref, store, FetchPolicy())
        assert image.size == (4, 2) and image.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("file:///etc/passwd", r"must be http\(s\)"),
        ("generations/none/x.png", "no stored image"),
        ("../../etc/passwd", "bad storage path"),
        ("not base64!", "valid base64"),
        ("data:image/png,raw", "base64-encoded"),
        ("http://127.0.0.1:9/x.png", "non-public address"),
        ("http://[::1]:9/x.png", "non-public address"),
        (base64.b64encode(b"not an image").decode(), "not a decodable image"),
    ],
)
def test_refusals_say_why(store, ref, reason):
    with pytest.raises(ValueError, match=reason):
        load_image(ref, store, FetchPolicy())


def test_size_limit(png, store):
    with pytest.raises(ValueError, match="over 10 bytes"):
        load_image(base64.b64encode(png * 10).decode(), store, FetchPolicy(max_bytes=10))


def test_unpadded_base64_with_a_slash_is_an_image_not_a_storage_path(store):
    # base64 of a length divisible by 3 has no '=' padding, and '/' is in its alphabet: such a
    # string was taken for a storage path and failed with "no stored image"
    for width in range(1, 64):
        out = io.BytesIO()
        Image.new("RGB", (width, 1), (0, 0, 255)).save(out, format="PNG")
        b64 = base64.b64encode(out.getvalue()).decode()
        if "/" in b64 and not b64.endswith("="):
            break
    else:
        pytest.fail("no PNG whose base64 has a '/' and no padding")
    assert load_image(b64, store, FetchPolicy()).size == (width, 1)


@pytest.fixture
def server(png) -> Iterator[str]:
    """A loopback HTTP server: /a.png is an image, /hop redirects to it by the name
    `localhost`, /ftp redirects to an ftp URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            port = self.server.server_address[1]
            target = {"/hop": f"http://localhost:{port}/a.png", "/ftp": "ftp://localhost/a.png"}
            if self.path in target:
                self.send_response(302)
                self.send_header("Location", target[self.path])
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_redirect_is_held_to_the_same_rules_as_the_url(server, store, monkeypatch):
    # stand-ins: 127.0.0.1 plays a public host, `localhost` an internal one
    def refuse_localhost(host: str, address: str) -> None:
        if host == "localhost":
            raise ValueError(f"{host} resolves to non-public address {address}")

    monkeypatch.setattr(images, "_refuse_private", refuse_localhost)
    assert load_image(f"{server}/a.png", store, FetchPolicy()).size == (4, 2)
    with pytest.raises(ValueError, match="localhost resolves to non-public address"):
        load_image(f"{server}/hop", store, FetchPolicy())
    with pytest.raises(ValueError, match="redirects to 'ftp', not http"):
        load_image(f"{server}/ftp", store, FetchPolicy())
    # a worker that allows private hosts follows the redirect
    assert load_image(f"{server}/hop", store, FetchPolicy(allow_private=True)).size == (4, 2)


def test_the_address_checked_is_the_address_connected_to(server, store, monkeypatch):
    """DNS rebinding: a name that resolves to a public address for the check and to an
    internal one a moment later must not reach the internal one. Stand-ins: 127.0.0.2 plays
    the public address (nothing listens there), 127.0.0.1 the internal service."""
    port = int(server.rsplit(":", 1)[1])
    real = socket.getaddrinfo
    lookups = []

    def rebinding(host, *args, **kwargs):
        if host != "rebind.example":
            return real(host, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.2" if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    def refuse_only_127_0_0_1(host: str, address: str) -> None:
        if address == "127.0.0.1":
            raise ValueError(f"{host} resolves to non-public address {address}")

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(images, "_refuse_private", refuse_only_127_0_0_1)
    with pytest.raises(ValueError, match="cannot fetch .*Connection refused"):
        load_image(f"http://rebind.example:{port}/a.png", store, FetchPolicy(timeout_s=2))
    assert lookups == ["rebind.example"], "one lookup serves the check and the connection"
