"""Errors leave the API as JSON bodies that say what is wrong."""

from __future__ import annotations

import json
import uuid
from unittest.mock import ANY

from api.task_bodies import NUL_MESSAGE


def test_unknown_route_is_401_without_a_token_and_json_404_with_one(running_api):
    assert running_api.call("GET", "/api/v1/nothing-here")[0] == 401
    assert running_api.call("GET", "/api/v1/nothing-here", token=running_api.admin_token) == (
        404,
        {"detail": "Not Found"},
    )


def test_a_path_off_by_a_slash_redirects_with_307_keeping_the_method(running_api):
    """As FastAPI answers, which the seed's clients may rely on: `/api/v1/tasks` is the
    list and create route `/api/v1/tasks/`, and `/api/v1/tasks/{id}/` the task."""
    token = running_api.admin_token
    status, headers, _ = running_api.call_raw("POST", "/api/v1/tasks?x=1", b"{}", token)
    assert status == 307 and headers["Location"] == "/api/v1/tasks/?x=1"
    status, headers, _ = running_api.call_raw("POST", "//api/v1/tasks/", b"{}", token)
    assert status == 307 and headers["Location"] == "/api/v1/tasks/"
    cancel = f"/api/v1/tasks/{uuid.uuid4()}/cancel"
    status, headers, _ = running_api.call_raw("POST", cancel + "/", None, token)
    assert status == 307 and headers["Location"] == cancel
    assert running_api.call("GET", "/api/v1/monitoring/stats/", token=token)[0] == 200
    # urllib follows a GET's redirect, as most clients do
    assert running_api.call("GET", "/api/v1/tasks?limit=1", token=token)[0] == 200
    assert running_api.call("GET", "/api/v1/tasks?limit=1") == (401, ANY)
    assert running_api.call("GET", "/api/v1/nothing-here/", token=token)[0] == 404
    status, headers, _ = running_api.call_raw("PUT", "//api/v1/tasks/x/", b"{}", token)
    assert status == 307 and headers["Location"] == "/api/v1/tasks/x"
    # only a slash is added or taken away: no near miss redirects
    assert running_api.call_raw("GET", "/api/v1/monitoring/statsx", None, token)[0] == 404


def test_the_generation_list_is_never_taken_for_a_task_id(running_api):
    """F30: /api/v1/tasks/generation is its own route for every method, so a method it lacks
    is 405 allowing its own (not a 422 about a task id, nor an Allow header listing the
    task routes' DELETE and PUT)."""
    token = running_api.admin_token
    for method in ("PUT", "DELETE", "OPTIONS"):
        status, headers, body = running_api.call_raw(
            method, "/api/v1/tasks/generation", b"{}", token
        )
        assert status == 405, (method, body)
        assert set(headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert running_api.call("GET", "/api/v1/tasks/generation?limit=1", token=token)[0] == 200


def test_oversized_bodies_are_413_with_the_limit(running_api):
    limit = running_api.settings.max_request_bytes
    status, body = running_api.call(
        "POST",
        "/schema-registry/subjects/x/versions",
        raw=b"{" + b" " * limit + b"}",
        token=running_api.admin_token,
    )
    assert status == 413 and body == {"detail": f"request body exceeds the {limit} byte limit"}


def test_wrong_method_is_json_405(running_api):
    status, body = running_api.call(
        "DELETE", "/schema-registry/subjects", token=running_api.admin_token
    )
    assert status == 405 and body == {"detail": "Method Not Allowed"}


def test_nul_characters_are_422_wherever_they_come(running_api):
    token = running_api.admin_token
    nul = [{"loc": ["query", "origin_instance"], "msg": NUL_MESSAGE, "type": "string_nul"}]
    assert running_api.call("GET", "/api/v1/tasks/?origin_instance=a%00b", token=token) == (
        422,
        {"detail": nul},
    )
    status, body = running_api.call("GET", "/api/v1/monitoring/tasks?search=%00", token=token)
    assert status == 422 and body["detail"][0]["loc"] == ["query", "search"]
    status, body = running_api.call("GET", "/api/v1/tasks/a%00b", token=token)
    assert status == 422 and body["detail"][0]["loc"] == ["path"]
    for path, body in (
        ("/api/v1/admin/tokens", {"tenant": "a\x00b", "role": "user"}),
        ("/api/v1/tasks/", {"task_type": "GENERATION", "prompt": "a\x00b"}),
    ):
        assert running_api.call("POST", path, body, token) == (
            422,
            {"detail": [{"loc": ["body"], "msg": NUL_MESSAGE, "type": "string_nul"}]},
        )


def test_values_that_would_not_survive_storage_are_422_and_create_nothing(running_api):
    token = running_api.admin_token
    for value, loc in (
        (b'"priority": 2147483648', "priority"),  # Avro int
        (b'"config": {"a": NaN}', "config"),  # would be stored as null
        (b'"config": {"a": [1e400]}', "config"),  # a double's Infinity
        (b'"provider_config": {"delay_ms": -Infinity}', "provider_config"),
    ):
        raw = b'{"task_type": "GENERATION", "prompt": "p", "origin_instance": "nan", %s}' % value
        status, body = running_api.call("POST", "/api/v1/tasks/", raw=raw, token=token)
        assert status == 422, body
        assert body["detail"][0]["loc"] == ["body", "GENERATION", loc]
    assert running_api.call("GET", "/api/v1/tasks/?origin_instance=nan", token=token) == (200, [])
    for path, name in (
        (f"/api/v1/tasks/?skip={2**63}", "skip"),  # past Postgres's bigint OFFSET
        (f"/api/v1/training/?skip={2**63}", "skip"),
        (f"/api/v1/monitoring/tasks?page={2**62}&page_size=500", "page"),
    ):
        status, body = running_api.call("GET", path, token=token)
        assert status == 422 and body["detail"][0]["loc"] == ["query", name], (path, body)


def test_a_tenant_name_must_be_able_to_name_its_upload_folder(running_api):
    token = running_api.admin_token
    for tenant in ("Acme Corp", "../x", "a/b", ".hidden", "x" * 256):
        status, body = running_api.call("POST", "/api/v1/admin/tokens", {"tenant": tenant}, token)
        assert status == 422 and body["detail"][0]["loc"] == ["body", "tenant"], tenant
    status, body = running_api.call("POST", "/api/v1/admin/tokens", {"tenant": "acme-2_b.c"}, token)
    assert status == 201 and body["tenant"] == "acme-2_b.c"


def test_a_missing_or_unknown_task_type_is_an_error_of_that_field(running_api):
    token = running_api.admin_token
    status, body = running_api.call("POST", "/api/v1/tasks/", {"fal_app_id": "x"}, token)
    assert (status, body) == (
        422,
        {"detail": [{"loc": ["body", "task_type"], "msg": "Field required", "type": "missing"}]},
    )
    status, body = running_api.call("POST", "/api/v1/tasks/", {"task_type": "PAINTING"}, token)
    assert status == 422
    (error,) = body["detail"]
    assert error["loc"] == ["body", "task_type"] and error["type"] == "enum"
    assert error["msg"].startswith("Input should be 'GENERATION', 'EDITING', 'REFINE', ")
    assert error["msg"].endswith(" or 'FACE_ENHANCER'")


def test_a_malformed_multipart_upload_is_400_with_the_reason(running_api):
    token = running_api.admin_token
    for path in (
        "/api/v1/storage/images/uploads/acme/x.png",
        "/api/v1/lora/upload",
        "/api/v1/admin/lora/upload",
    ):
        for content_type, body, why in (
            ("multipart/form-data", b"", "boundary missed"),  # no boundary
            ("multipart/form-data; boundary=b", b"not a multipart body", "starting boundary"),
        ):
            status, _, answer = running_api.call_raw(
                "POST", path, body, token, {"Content-Type": content_type}
            )
            assert status == 400, (path, content_type, answer)
            detail = json.loads(answer)["detail"]
            assert detail.startswith("malformed multipart body: ") and why in detail, detail
        status, _, _ = running_api.call_raw(
            "POST", path, b"{}", token, {"Content-Type": "application/json"}
        )
        assert status == 415, path
