"""Errors leave the API as JSON bodies that say what is wrong."""

from __future__ import annotations


def test_unknown_route_is_401_without_a_token_and_json_404_with_one(running_api):
    assert running_api.call("GET", "/api/v1/nothing-here")[0] == 401
    assert running_api.call("GET", "/api/v1/nothing-here", token=running_api.admin_token) == (
        404,
        {"detail": "Not Found"},
    )


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
