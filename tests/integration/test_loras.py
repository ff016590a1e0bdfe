"""LoRA files over HTTP: upload (user and admin), versioning or 409, limits, delete-to-bin,
and resolution of uploaded files through the model registry."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from gpu.models import ModelRegistry, UnknownModel
from tests.conftest import new_database
from tests.integration.conftest import multipart, serve_api, settings_for

MB = 1024 * 1024


@pytest.fixture(scope="module")
def api(infra, bootstrap, tmp_path_factory):
    models = tmp_path_factory.mktemp("lora-models")
    with (
        new_database(infra) as url,
        # above the 10 MB body limit of every other route: uploads stream past it
        serve_api(settings_for(bootstrap, url, models_dir=models, lora_max_bytes=12 * MB)) as api,
    ):
        yield api


@pytest.fixture(scope="module")
def user(api) -> str:
    return api.call("POST", "/api/v1/admin/tokens", {"tenant": "acme"}, api.admin_token)[1]["token"]


def weights(fill: float = 0.0, megabytes: float = 0.0) -> bytes:
    """A real safetensors file (uploads named .safetensors are checked), distinct per `fill`,
    of about `megabytes`."""
    return save({"lora": np.full(max(1, int(megabytes * MB) // 4), fill, dtype=np.float32)})


def upload(api, token, name: str, data: bytes, route="/api/v1/lora/upload", **fields):
    body, headers = multipart({"file": (name, data)}, **fields)
    return api.call("POST", route, raw=body, token=token, headers=headers)


def test_upload_versions_duplicates_or_refuses_them(api, user):
    one, two = weights(1), weights(2)
    status, first = upload(api, user, "My LoRA!.safetensors", one, entity_type="identities")
    assert status == 201, first
    assert first["partial_path"] == "identities/My_LoRA.safetensors"
    assert first["filename"] == "My LoRA!.safetensors" and first["file_size"] == len(one)
    assert "entity_type" not in first and first["upload_timestamp"]
    assert Path(first["file_path"]).read_bytes() == one
    assert Path(first["file_path"]) == api.settings.models_root() / "loras" / first["partial_path"]

    status, second = upload(api, user, "My LoRA!.safetensors", two, entity_type="identities")
    assert (status, second["partial_path"]) == (201, "identities/My_LoRA_v2.safetensors")
    assert Path(second["file_path"]).read_bytes() == two

    status, refused = upload(
        api, user, "My LoRA!.safetensors", two, entity_type="identities", use_safe_filename="false"
    )
    assert status == 409 and "use_safe_filename" in refused["detail"]
    assert Path(first["file_path"]).read_bytes() == one  # never overwritten

    status, untyped = upload(api, user, "../../etc/x.pt", b"pt")
    assert (status, untyped["partial_path"]) == (201, "no_type_provided/x.pt")


def test_bad_uploads_are_refused_with_a_reason(api, user):
    status, body = upload(api, user, "notes.txt", b"x")
    assert status == 400 and ".safetensors" in body["detail"]
    status, body = upload(api, user, "a.safetensors", weights(), entity_type="faces")
    assert status == 400 and "entity_type must be one of" in body["detail"]
    # a file named .safetensors must be one: a broken upload would fail every task naming it
    for broken in (b"", b"x" * 100, weights()[:-4]):
        status, body = upload(api, user, "broken.safetensors", broken, entity_type="styles")
        assert status == 422, body
        assert body["detail"].startswith("broken.safetensors is not a safetensors file: ")
    loras = api.settings.models_root() / "loras"
    assert not (loras / "styles" / "broken.safetensors").exists()
    status, body = upload(api, user, "a.bin", b"x", route="/api/v1/admin/lora/upload")
    assert status == 403
    body, headers = multipart(entity_type="styles")
    status, missing = api.call("POST", "/api/v1/lora/upload", raw=body, token=user, headers=headers)
    assert status == 422 and missing["detail"][0]["loc"] == ["body", "file"]
    status, _ = upload(api, None, "a.safetensors", b"x")
    assert status == 401


def test_files_stream_past_the_body_limit_up_to_the_lora_cap(api, user):
    big = weights(3, megabytes=11)  # over the API's 10 MB body limit, under the 12 MB LoRA cap
    status, stored = upload(api, user, "big.safetensors", big, entity_type="styles")
    assert status == 201, stored
    assert Path(stored["file_path"]).read_bytes() == big
    status, body = upload(api, user, "huge.safetensors", os.urandom(13 * MB), entity_type="styles")
    assert status == 413 and str(12 * MB) in body["detail"]
    loras = api.settings.models_root() / "loras"
    assert not (loras / "styles" / "huge.safetensors").exists()
    assert list((loras / ".incoming").iterdir()) == []  # the partial file is gone too


def test_admin_upload_allows_faces_and_delete_moves_to_the_bin(api, user):
    status, face = upload(
        api,
        api.admin_token,
        "face.safetensors",
        weights(4),
        "/api/v1/admin/lora/upload",
        entity_type="faces",
    )
    assert status == 201 and face["entity_type"] == "faces"
    registry = ModelRegistry(api.settings.models_root())
    assert registry.lora_file(face["partial_path"]) == Path(face["file_path"])

    request = {"partial_path": face["partial_path"]}
    assert api.call("DELETE", "/api/v1/admin/lora", request, user)[0] == 403
    status, deleted = api.call("DELETE", "/api/v1/admin/lora", request, api.admin_token)
    assert status == 200 and deleted["deleted"] is True
    assert deleted["full_path"] == face["file_path"]
    binned = Path(deleted["bin_path"])
    assert binned == api.settings.data_dir / "bin/models/loras/faces/face.safetensors"
    assert binned.read_bytes() == weights(4) and not Path(face["file_path"]).exists()
    with pytest.raises(UnknownModel):
        registry.lora_file(face["partial_path"])
    assert api.call("DELETE", "/api/v1/admin/lora", request, api.admin_token)[0] == 404
    for bad in ("../secrets/x.safetensors", "faces/../../x", "x.safetensors", "a/b/c"):
        status, body = api.call(
            "DELETE", "/api/v1/admin/lora", {"partial_path": bad}, api.admin_token
        )
        assert status == 400, (bad, body)


def test_pickled_loras_are_never_loaded(api, user):
    status, stored = upload(api, user, "old.ckpt", b"pickle", entity_type="product")
    assert status == 201
    with pytest.raises(UnknownModel, match="only .safetensors"):
        ModelRegistry(api.settings.models_root()).lora_file(stored["partial_path"])
