"""Storage routes (seed §1.6): list, read, check, upload and delete stored images.

Paths may contain slashes (`generations/{task_id}/result.png`). Every path passes
`state.storage.safe_key` (no `..`, no absolute paths) and the local store refuses anything
resolving outside its root, so traversal answers 400 (or 404 where it resolves to nothing).

Signed URLs (`api.signing`) grant GET/HEAD of one path without a token, for `<img>` tags.
Tenancy (`api.tenancy.may_access`): an admin token reaches every object. A user token
reaches the files of its own tenant's tasks (`<kind>/<task_id>/…`, read and delete) and its
upload area `uploads/<tenant>/…` (read, write, delete); anything else is 404 to it, as other
tenants' tasks are.

Uploads must be images (PNG, JPEG, WebP, GIF, BMP or TIFF, named for their type): anything
else is a 415 that says so. Reads serve those types as images and anything else (files the
workers write, such as a dataset's `metadata.jsonl`) as a download, always with `nosniff` and
a sandboxing Content-Security-Policy, so nothing stored can run as a page on this origin:
signed URLs are meant for `<img>` tags, and a browser must not render stored HTML or SVG.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import Any

from aiohttp import web
from PIL import Image
from pydantic import BaseModel, Field

from api.keys import SIGNER, STORAGE
from api.openapi import documented
from api.requests import multipart_parts, parse_query
from api.responses import field_error, json_response, problem
from api.tenancy import may_access, scope
from state.storage import BadKey, NotFound, ObjectInfo, PathTaken, safe_key

routes = web.RouteTableDef()
PREFIX = "/api/v1/storage/images"


class ListImagesQuery(BaseModel):
    prefix: str = Field("", max_length=512, description="Only paths starting with this")
    limit: int = Field(100, ge=1, le=1000)


class StoredImage(BaseModel):
    path: str = Field(..., description="Relative path in storage")
    size: int
    modified_at: str
    url: str = Field(..., description="URL of the image on this API")
    content_type: str


class StoredImageList(BaseModel):
    images: list[StoredImage]
    count: int


def signed_storage_read(request: web.Request) -> bool:
    """Whether `request` is a GET/HEAD of a storage path with a valid signature for it."""
    if request.method not in ("GET", "HEAD") or not request.path.startswith(PREFIX + "/"):
        return False
    path = request.path[len(PREFIX) + 1 :]
    return request.app[SIGNER].verify(
        path, request.query.get("expires"), request.query.get("signature")
    )


def signed_url(request: web.Request, path: str) -> str:
    """An absolute URL of stored `path` that a browser can load without a token."""
    base = f"{request.scheme}://{request.host}"
    return f"{base}{PREFIX}/{path}?{request.app[SIGNER].query(path)}"


#: Image files by suffix: their content type, and the format Pillow must find in an upload.
IMAGE_TYPES = {
    ".png": ("image/png", "PNG"),
    ".jpg": ("image/jpeg", "JPEG"),
    ".jpeg": ("image/jpeg", "JPEG"),
    ".webp": ("image/webp", "WEBP"),
    ".gif": ("image/gif", "GIF"),
    ".bmp": ("image/bmp", "BMP"),
    ".tif": ("image/tiff", "TIFF"),
    ".tiff": ("image/tiff", "TIFF"),
}
DOWNLOAD = "application/octet-stream"
#: On every read: no type sniffing, and a document that can do nothing if a browser shows it.
READ_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name[name.rfind(".") :].lower() if "." in name else ""


def content_type_of(path: str) -> str:
    """What a stored object is served as: its image type, else a plain download."""
    return IMAGE_TYPES.get(_suffix(path), (DOWNLOAD, ""))[0]


def read_headers(key: str) -> dict[str, str]:
    headers = {**READ_HEADERS, "Content-Type": content_type_of(key)}
    if headers["Content-Type"] == DOWNLOAD:  # key segments are [A-Za-z0-9._=+-]: safe to quote
        headers["Content-Disposition"] = f'attachment; filename="{key.rsplit("/", 1)[-1]}"'
    return headers


def image_problem(key: str, data: bytes) -> str | None:
    """Why `data`, to be stored at `key`, is not an image of the type its name says (None
    when it is)."""
    expected = IMAGE_TYPES.get(_suffix(key))
    if expected is None:
        return f"only images are stored here: name the file {', '.join(IMAGE_TYPES)}"
    try:
        with Image.open(io.BytesIO(data)) as image:
            found = image.format
            image.verify()
    except Exception as exc:  # Pillow raises many kinds for a broken file
        return f"the file is not a readable image ({type(exc).__name__}: {exc})"[:300]
    if found != expected[1]:
        return f"the file is a {found} image, but its name says {expected[1]}"
    return None


def describe(info: ObjectInfo) -> dict[str, Any]:
    return StoredImage(
        path=info.key,
        size=info.size,
        modified_at=info.modified.isoformat(),
        url=f"{PREFIX}/{info.key}",
        content_type=content_type_of(info.key),
    ).model_dump()


async def _key(request: web.Request, write: bool = False) -> str:
    """The requested path, checked for safety and for the caller's tenancy."""
    try:
        key = safe_key(request.match_info["path"])
    except BadKey as exc:
        raise problem(web.HTTPBadRequest, str(exc)) from None
    if not await may_access(request, key, write):
        raise problem(web.HTTPNotFound, f"no image at {key}")
    return key


async def _existing(key: str, operation: Callable[[str], Any]) -> Any:
    """`operation(key)` off the event loop; 404 when there is no object (or only a link out)."""
    try:
        return await asyncio.to_thread(operation, key)
    except (NotFound, BadKey):
        raise problem(web.HTTPNotFound, f"no image at {key}") from None


@routes.get(PREFIX)
@documented(
    "List Images", "storage", query=ListImagesQuery, response=StoredImageList, errors=(400,)
)
async def list_images(request: web.Request) -> web.Response:
    query = parse_query(request, ListImagesQuery)
    tenant = scope(request)
    prefix = query.prefix
    if tenant is not None:  # a user lists its upload area only; task files come via tasks
        own = f"uploads/{tenant}/"
        if not (prefix.startswith(own) or own.startswith(prefix)):
            return json_response({"images": [], "count": 0})
        prefix = max(prefix, own, key=len)
    store = request.app[STORAGE]
    try:
        found = await asyncio.to_thread(store.list, prefix, query.limit)
    except BadKey as exc:
        raise problem(web.HTTPBadRequest, str(exc)) from None
    images = [describe(i) for i in found]
    return json_response({"images": images, "count": len(images)})


@routes.get(PREFIX + "/{path:.+}", allow_head=False)
@documented("Get Image", "storage", errors=(400,))
async def get_image(request: web.Request) -> web.Response:
    key = await _key(request)
    data = await _existing(key, request.app[STORAGE].get)
    return web.Response(body=data, headers=read_headers(key))


@routes.head(PREFIX + "/{path:.+}")
@documented("Check Image Exists", "storage", errors=(400,))
async def head_image(request: web.Request) -> web.Response:
    key = await _key(request)
    info = await _existing(key, request.app[STORAGE].stat)
    return web.Response(headers={**read_headers(key), "Content-Length": str(info.size)})


@routes.post(PREFIX + "/{path:.+}")
@documented("Save Image", "storage", response=StoredImage, status=201, errors=(400, 409, 413, 415))
async def save_image(request: web.Request) -> web.Response:
    """Multipart body with one `file` part, as in the seed."""
    key = await _key(request, write=True)
    data: bytes | None = None
    async for part in multipart_parts(request):
        if part.name == "file":
            data = await part.read()  # bounded by the app's client_max_size
            break
    if data is None:
        raise field_error(["body", "file"], "Field required", "missing")
    if (why := await asyncio.to_thread(image_problem, key, data)) is not None:
        raise problem(web.HTTPUnsupportedMediaType, why)
    try:
        info = await asyncio.to_thread(request.app[STORAGE].put, key, data)
    except BadKey as exc:
        raise problem(web.HTTPBadRequest, str(exc)) from None
    except PathTaken as exc:
        raise problem(web.HTTPConflict, str(exc)) from None
    return json_response(describe(info), status=201)


@routes.delete(PREFIX + "/{path:.+}")
@documented("Delete Image", "storage", errors=(400,))
async def delete_image(request: web.Request) -> web.Response:
    key = await _key(request)
    await _existing(key, request.app[STORAGE].delete)
    return json_response({"deleted": key})
