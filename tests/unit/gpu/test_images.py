"""Image inputs in every accepted form, and the refusals (all `ValueError`: VALIDATION)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

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
