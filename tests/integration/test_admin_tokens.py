"""Admins issue, list and revoke API tokens; a revoked token authenticates nothing."""

from __future__ import annotations

import hashlib
import uuid


def test_a_revoked_token_is_refused_at_once_and_listed_as_revoked(running_api):
    api, admin = running_api, running_api.admin_token
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    status, issued = api.call(
        "POST", "/api/v1/admin/tokens", {"tenant": tenant, "label": "ci"}, admin
    )
    assert status == 201
    token, token_id = issued["token"], issued["token_id"]
    assert token_id == hashlib.sha256(token.encode()).hexdigest()
    assert api.call("GET", "/api/v1/tasks/?limit=1", token=token)[0] == 200  # cached now

    status, listed = api.call("GET", f"/api/v1/admin/tokens?tenant={tenant}", token=admin)
    assert status == 200 and [(t["token_id"], t["role"], t["label"]) for t in listed] == [
        (token_id, "user", "ci")
    ]
    assert listed[0]["revoked_at"] is None and "token" not in listed[0]

    status, revoked = api.call("DELETE", f"/api/v1/admin/tokens/{token_id}", token=admin)
    assert status == 200 and revoked["token_id"] == token_id and revoked["revoked_at"]
    assert api.call("GET", "/api/v1/tasks/?limit=1", token=token)[0] == 401
    # revoking again keeps the first time; the list hides it unless asked
    assert api.call("DELETE", f"/api/v1/admin/tokens/{token_id}", token=admin) == (200, revoked)
    assert api.call("GET", f"/api/v1/admin/tokens?tenant={tenant}", token=admin) == (200, [])
    assert api.call(
        "GET", f"/api/v1/admin/tokens?tenant={tenant}&include_revoked=true", token=admin
    ) == (200, [revoked])


def test_revoking_is_for_admins_and_names_a_token_that_exists(running_api):
    api, admin = running_api, running_api.admin_token
    _, user = api.call("POST", "/api/v1/admin/tokens", {"tenant": "acme"}, admin)
    _, other_admin = api.call(
        "POST", "/api/v1/admin/tokens", {"tenant": "ops", "role": "admin"}, admin
    )
    revoke_other = f"/api/v1/admin/tokens/{other_admin['token_id']}"
    assert api.call("GET", "/api/v1/admin/tokens", token=user["token"])[0] == 403
    assert api.call("DELETE", revoke_other, token=user["token"])[0] == 403
    assert api.call("DELETE", f"/api/v1/admin/tokens/{'0' * 64}", token=admin) == (
        404,
        {"detail": f"token {'0' * 64} not found"},
    )
    status, body = api.call("DELETE", "/api/v1/admin/tokens/not-a-hash", token=admin)
    assert status == 422 and body["detail"][0]["loc"] == ["path", "token_id"]
    # a token cannot lock its holder out: revoke it with another admin token
    me = other_admin["token"]
    status, body = api.call("DELETE", revoke_other, token=me)
    assert status == 409 and "another admin token" in body["detail"]
    assert api.call("GET", "/api/v1/admin/tokens?limit=1", token=me)[0] == 200
