"""LoRA files: upload (admin and user) and delete-to-bin (admin).

Files live in the model registry's LoRA folder, `<models dir>/loras/<entity_type>/<name>`,
where the workers resolve them: `"subject_model_path": "identities/my_lora.safetensors"`
names an uploaded file (workers load `.safetensors` only; the other accepted suffixes are
stored for other tools but never unpickled here). The API and the workers share the models
dir (one machine, or a shared volume).

Uploads stream to a temporary file in the target folder and are capped at
`lora_max_bytes` (500 MB) while they arrive, so a file is never held in memory and a
too-large one leaves nothing behind. The final name is claimed with a hard link, which fails
rather than overwrites: with `use_safe_filename` (default) a taken name becomes
`name_v2.safetensors`, `name_v3…`; without it a taken name is a 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from pydantic import BaseModel, Field
from safetensors import safe_open

from api.keys import SETTINGS
from api.openapi import documented
from api.requests import multipart_parts, parse_body, require_admin
from api.responses import field_error, json_response, problem

routes = web.RouteTableDef()

SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
ENTITY_TYPES = ("clothes", "identities", "product", "styles")
ADMIN_ENTITY_TYPES = (*ENTITY_TYPES, "faces")
NO_TYPE = "no_type_provided"
CHUNK = 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class LoRAUploadResponse(BaseModel):
    file_path: str = Field(..., description="Full path where the LoRA file was stored")
    partial_path: str = Field(..., description="Path relative to the LoRA directory")
    filename: str = Field(..., description="Original filename of the uploaded file")
    file_size: int = Field(..., description="Size of the uploaded file in bytes")
    upload_timestamp: str = Field(..., description="ISO timestamp of the upload")


class AdminLoRAUploadResponse(LoRAUploadResponse):
    entity_type: str = Field(..., description="The entity type category")


class LoRADeleteRequest(BaseModel):
    partial_path: str = Field(..., min_length=1, max_length=512)


class LoRADeleteResponse(BaseModel):
    deleted: bool
    full_path: str
    bin_path: str | None = None
    timestamp: str


def loras_root(request: web.Request) -> Path:
    return request.app[SETTINGS].models_root() / "loras"


def safe_filename(original: str) -> str:
    """The basename of `original` with anything outside [A-Za-z0-9._-] replaced by '_'."""
    base = original.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = base.rpartition(".")
    stem = _UNSAFE.sub("_", stem).strip("._-")[:120] or "lora"
    return f"{stem}{dot}{suffix.lower()}"


def _not_safetensors(path: Path) -> str | None:
    """Why the file at `path` cannot be read as safetensors (None when it can): its header
    is read, no tensor. A broken upload is refused here instead of failing every task that
    names it later."""
    try:
        with safe_open(path, framework="numpy") as weights:
            weights.keys()
    except Exception as exc:  # safetensors raises its own error types, and OSError
        return str(exc)[:200] or type(exc).__name__
    return None


def _versions(name: str):
    stem, _, suffix = name.rpartition(".")
    yield name
    for n in range(2, 10_000):
        yield f"{stem}_v{n}.{suffix}"


def _claim(temp: Path, folder: Path, name: str, versioned: bool) -> Path:
    """Link `temp` to the first free name (or `name` only); FileExistsError when taken."""
    for candidate in _versions(name) if versioned else [name]:
        target = folder / candidate
        try:
            os.link(temp, target)
            return target
        except FileExistsError:
            continue
    raise FileExistsError(folder / name)


async def _stream_to(part: BodyPartReader, temp: Path, limit: int) -> int:
    size = 0
    with temp.open("wb") as out:
        while chunk := await part.read_chunk(CHUNK):
            size += len(chunk)
            if size > limit:
                raise problem(
                    web.HTTPRequestEntityTooLarge,
                    f"a LoRA file may have at most {limit} bytes",
                    max_size=limit,
                    actual_size=size,
                )
            await asyncio.to_thread(out.write, chunk)
    return size


async def _upload(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    root = loras_root(request)
    incoming = root / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    temp = incoming / f"{uuid.uuid4().hex}.part"
    fields: dict[str, str] = {}
    original = size = None
    try:
        async for part in multipart_parts(request):
            if part.name == "file":
                original = part.filename or ""
                if not original.lower().endswith(SUFFIXES):
                    raise problem(
                        web.HTTPBadRequest, f"the file must end in one of {', '.join(SUFFIXES)}"
                    )
                size = await _stream_to(part, temp, request.app[SETTINGS].lora_max_bytes)
            elif part.name in ("entity_type", "use_safe_filename"):
                fields[part.name] = (await part.text())[:64]
        if original is None:
            raise field_error(["body", "file"], "Field required", "missing")
        if original.lower().endswith(".safetensors") and (
            why := await asyncio.to_thread(_not_safetensors, temp)
        ):
            raise problem(
                web.HTTPUnprocessableEntity, f"{original} is not a safetensors file: {why}"
            )
        entity = fields.get("entity_type") or NO_TYPE
        if entity != NO_TYPE and entity not in allowed:
            raise problem(web.HTTPBadRequest, f"entity_type must be one of {', '.join(allowed)}")
        versioned = fields.get("use_safe_filename", "true").strip().lower() not in (
            "false",
            "0",
            "no",
            "off",
        )
        folder = root / entity
        folder.mkdir(exist_ok=True)
        try:
            target = await asyncio.to_thread(
                _claim, temp, folder, safe_filename(original), versioned
            )
        except FileExistsError:
            raise problem(
                web.HTTPConflict,
                f"{entity}/{safe_filename(original)} exists; send use_safe_filename=true to"
                " store it as a new version",
            ) from None
    finally:
        temp.unlink(missing_ok=True)
    return {
        "file_path": str(target),
        "partial_path": f"{entity}/{target.name}",
        "filename": original,
        "file_size": size,
        "upload_timestamp": datetime.now(UTC).isoformat(),
        "entity_type": entity,
    }


@routes.post("/api/v1/lora/upload")
@documented(
    "Upload a LoRA model file",
    "lora",
    response=LoRAUploadResponse,
    status=201,
    errors=(400, 409, 413, 415),
)
async def upload_lora(request: web.Request) -> web.Response:
    """Multipart: `file` (.safetensors .ckpt .pt .pth .bin, at most 500 MB), `entity_type`
    (clothes, identities, product, styles; default no_type_provided) and `use_safe_filename`
    (default true: a taken name gets a `_v2` suffix; false: 409)."""
    body = await _upload(request, ENTITY_TYPES)
    body.pop("entity_type")
    return json_response(body, status=201)


@routes.post("/api/v1/admin/lora/upload")
@documented(
    "Upload a LoRA model file (Admin)",
    "admin",
    response=AdminLoRAUploadResponse,
    status=201,
    errors=(400, 403, 409, 413, 415),
)
async def admin_upload_lora(request: web.Request) -> web.Response:
    """As `/api/v1/lora/upload`, for admins, and `faces` is an entity type too."""
    require_admin(request)
    return json_response(await _upload(request, ADMIN_ENTITY_TYPES), status=201)


def _lora_path(root: Path, partial: str) -> Path:
    segments = partial.split("/")
    if len(segments) != 2 or any(s in ("", ".", "..") or _UNSAFE.search(s) for s in segments):
        raise problem(
            web.HTTPBadRequest, "partial_path is '<entity_type>/<file name>', as upload returns it"
        )
    return root.joinpath(*segments)


@routes.delete("/api/v1/admin/lora")
@documented(
    "Delete a LoRA model file (Admin)",
    "admin",
    body=LoRADeleteRequest,
    response=LoRADeleteResponse,
    errors=(400, 403),
)
async def admin_delete_lora(request: web.Request) -> web.Response:
    """Moves the file to `<data dir>/bin/models/loras/<partial_path>` (recoverable); a file
    already binned under that name gets a timestamp suffix."""
    require_admin(request)
    body: LoRADeleteRequest = await parse_body(request, LoRADeleteRequest)
    settings = request.app[SETTINGS]
    source = _lora_path(loras_root(request), body.partial_path)
    if not source.is_file():
        raise problem(web.HTTPNotFound, f"no LoRA file {body.partial_path}")
    binned = settings.data_dir / "bin" / "models" / "loras" / body.partial_path
    binned.parent.mkdir(parents=True, exist_ok=True)
    if binned.exists():
        binned = binned.with_name(
            f"{binned.stem}.{datetime.now(UTC):%Y%m%dT%H%M%S%f}{binned.suffix}"
        )
    with contextlib.suppress(FileNotFoundError):
        await asyncio.to_thread(os.replace, source, binned)
        return json_response(
            {
                "deleted": True,
                "full_path": str(source),
                "bin_path": str(binned),
                "timestamp": datetime.now(UTC).isoformat(),
            }
        )
    raise problem(web.HTTPNotFound, f"no LoRA file {body.partial_path}")
