"""One contract suite for every `SchemaRegistry` implementation, then the REST surface."""

from __future__ import annotations

import json

import pytest

from state.registry_store import RegistryStore
from streams.registry import HttpSchemaRegistry, RegistryError

V1 = json.dumps(
    {"type": "record", "name": "Thing", "namespace": "t", "fields": [{"name": "a", "type": "int"}]}
)
V2 = json.dumps(
    {
        "type": "record",
        "name": "Thing",
        "namespace": "t",
        "fields": [
            {"name": "a", "type": "int"},
            {"name": "b", "type": ["null", "string"], "default": None},
        ],
    }
)
BREAKING = json.dumps(
    {
        "type": "record",
        "name": "Thing",
        "namespace": "t",
        "fields": [{"name": "a", "type": "int"}, {"name": "c", "type": "string"}],
    }
)


@pytest.fixture(params=["postgres-store", "http"])
def registry(request):
    if request.param == "postgres-store":
        yield RegistryStore(request.getfixturevalue("db"))
        return
    api = request.getfixturevalue("running_api")
    client = HttpSchemaRegistry(api.url + "/schema-registry", f"admin:{api.admin_token}")
    yield client
    client.close()


REFUSED = RegistryError  # the protocol's promise, whichever implementation


def test_register_is_idempotent_and_ids_resolve(registry):
    first = registry.register("t.Thing", V1)
    assert registry.register("t.Thing", V1) == first
    assert json.loads(registry.schema_by_id(first)) == json.loads(V1)


def test_the_same_schema_under_two_subjects_shares_an_id(registry):
    assert registry.register("a-value", V1) == registry.register("b-value", V1)


def test_a_compatible_change_gets_a_new_id(registry):
    v1 = registry.register("t.Thing", V1)
    v2 = registry.register("t.Thing", V2)
    assert v2 != v1
    assert json.loads(registry.schema_by_id(v2)) == json.loads(V2)


def test_a_breaking_change_is_refused(registry):
    registry.register("t.Thing", V1)
    with pytest.raises(REFUSED, match="backward compatible|409"):
        registry.register("t.Thing", BREAKING)


def test_an_unknown_id_and_an_invalid_schema_are_errors(registry):
    with pytest.raises(REFUSED):
        registry.schema_by_id(987654)
    with pytest.raises(REFUSED):
        registry.register("t.Bad", '{"type": "no-such-type"}')
    with pytest.raises(REFUSED):
        registry.register("t.Bad", "not json at all")


# --- REST surface --------------------------------------------------------------------------


def test_rest_subject_versions_and_latest(running_api):
    api, token = running_api, running_api.admin_token
    status, body = api.call(
        "POST", "/schema-registry/subjects/t.Thing/versions", {"schema": V1}, token
    )
    assert status == 200 and isinstance(body["id"], int)
    api.call("POST", "/schema-registry/subjects/t.Thing/versions", {"schema": V2}, token)
    assert api.call("GET", "/schema-registry/subjects/t.Thing/versions", token=token) == (
        200,
        [1, 2],
    )
    status, latest = api.call(
        "GET", "/schema-registry/subjects/t.Thing/versions/latest", token=token
    )
    assert (
        status == 200 and latest["version"] == 2 and json.loads(latest["schema"]) == json.loads(V2)
    )
    status, subjects = api.call("GET", "/schema-registry/subjects", token=token)
    assert "t.Thing" in subjects and "taskstream.commands.CreateTask" in subjects


def test_rest_compatibility_check(running_api):
    api, token = running_api, running_api.admin_token
    api.call("POST", "/schema-registry/subjects/t.Thing/versions", {"schema": V1}, token)
    path = "/schema-registry/compatibility/subjects/t.Thing/versions/latest?verbose=true"
    assert api.call("POST", path, {"schema": V2}, token) == (
        200,
        {"is_compatible": True, "messages": []},
    )
    status, body = api.call("POST", path, {"schema": BREAKING}, token)
    assert (
        status == 200
        and body["is_compatible"] is False
        and "c: new field has no default" in body["messages"][0]
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/schema-registry/subjects/nope/versions", None, 404, 40401),
        (
            "GET",
            "/schema-registry/subjects/taskstream.commands.CreateTask/versions/99",
            None,
            404,
            40402,
        ),
        (
            "GET",
            "/schema-registry/subjects/taskstream.commands.CreateTask/versions/zero",
            None,
            422,
            42202,
        ),
        ("GET", "/schema-registry/schemas/ids/424242", None, 404, 40403),
        ("POST", "/schema-registry/subjects/x/versions", {"schema": "not json"}, 422, 42201),
        (
            "POST",
            "/schema-registry/subjects/x/versions",
            {"schema": V1, "schemaType": "PROTOBUF"},
            422,
            42201,
        ),
        ("POST", "/schema-registry/subjects/x/versions", ["wrong shape"], 422, 42201),
    ],
)
def test_rest_errors_use_confluent_error_bodies(running_api, method, path, body, status, code):
    got_status, got = running_api.call(method, path, body, running_api.admin_token)
    assert got_status == status and got["error_code"] == code and got["message"]


def test_rest_needs_a_token_and_registration_needs_admin(running_api, user_token):
    assert running_api.call("GET", "/schema-registry/subjects")[0] == 401
    assert running_api.call("GET", "/schema-registry/subjects", token="forged")[0] == 401
    assert running_api.call("GET", "/schema-registry/subjects", token=user_token)[0] == 200
    status, body = running_api.call(
        "POST", "/schema-registry/subjects/t.X/versions", {"schema": V1}, user_token
    )
    assert status == 403 and body["error_code"] == 40301
