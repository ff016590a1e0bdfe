"""pydantic's JSON Schema 2020-12 is turned into the OpenAPI 3.0 dialect the UI renders."""

from api.openapi import _to_oas30


def test_nullable_unions_consts_and_exclusive_bounds():
    schema = {
        "properties": {
            "a": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}], "default": None},
            "b": {"anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]},
            "c": {"const": "GENERATION"},
            "d": {"type": "number", "exclusiveMinimum": 0.0},
        }
    }
    props = _to_oas30(schema)["properties"]
    assert props["a"] == {"type": "string", "maxLength": 3, "default": None, "nullable": True}
    assert props["b"] == {"anyOf": [{"$ref": "#/components/schemas/X"}], "nullable": True}
    assert props["c"] == {"enum": ["GENERATION"]}
    assert props["d"] == {"type": "number", "minimum": 0.0, "exclusiveMinimum": True}
