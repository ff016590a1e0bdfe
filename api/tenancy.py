"""Which tenant a caller is confined to, and which stored files it may reach.

An admin token reaches everything. A user token reaches its own tenant's tasks, and in
storage the files of those tasks (in `state.storage.task_folder`: `generations/<task_id>/…`,
`trainings/<task_id>/…` and so on; read and delete) and its upload area
`uploads/<tenant>/…` (read, write, delete). The rule holds wherever a stored path can enter:
the storage routes, the signed URLs of a task's media, and the image references of a task a
user creates, which a worker would otherwise read on the user's behalf from anywhere in the
store (and hand back, upscaled or edited, as the task's result).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from api.auth import Principal
from api.keys import PRINCIPAL, TASK_READER
from api.responses import field_error
from state.storage import BadKey, safe_key, stored_key, task_folder

#: Body fields whose values workers read as image references (`gpu.images.load_image`):
#: base64, a data URL, an http(s) URL or a storage path, alone or in a list.
IMAGE_INPUTS = frozenset(
    {
        "base_image",
        "base_image_url",
        "base_image_data",
        "reference_image",
        "reference_image_url",
        "reference_image_data",
        "reference_images",
        "palette_image",
        "input_image",
        "input_image_url",  # a VIDEO_GENERATION's
        "input_image_data",
        "input_images",
        "input_image_paths",
        "source_images",  # a training's
    }
)


def scope(request: web.Request) -> str | None:
    """The tenant a caller is confined to (None: an admin, who sees every tenant)."""
    principal: Principal = request[PRINCIPAL]
    return None if principal.is_admin else principal.tenant


async def may_access(request: web.Request, key: str, write: bool = False) -> bool:
    """Whether the caller may read (or with `write`, write) the stored object at `key`, a
    key `safe_key` accepts."""
    tenant = scope(request)
    if tenant is None:
        return True
    parts = key.split("/")
    if parts[0] == "uploads":
        return len(parts) > 2 and parts[1] == tenant
    if write or len(parts) < 3:
        return False
    try:
        task_id = uuid.UUID(parts[1])
    except ValueError:
        return False
    row = await request.app[TASK_READER].get(task_id, tenant)
    return row is not None and key.startswith(task_folder(row["task_type"], task_id) + "/")


async def check_image_inputs(
    request: web.Request, body: Mapping[str, Any], loc: Sequence[str] = ("body",)
) -> None:
    """422 for the first image reference in a task body that names a stored file the caller
    may not read, at `loc` + the field (+ its index in a list), as pydantic would place it.
    The answer is the same whether or not such a file exists."""
    if scope(request) is None:
        return
    for name in IMAGE_INPUTS & body.keys():
        value = body[name]
        for index, ref in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if not isinstance(ref, str) or (key := stored_key(ref)) is None:
                continue
            where = [*loc, name] if index is None else [*loc, name, index]
            try:
                safe_key(key)
            except BadKey as exc:
                raise field_error(where, f"bad storage path: {exc}", "storage_path") from None
            if not await may_access(request, key):
                raise field_error(
                    where,
                    f"no image at {key} that this token may read (its own uploads are under"
                    f" uploads/{scope(request)}/)",
                    "storage_path",
                )
