"""The compiled codec writes exactly fastavro's bytes and reads exactly what fastavro reads."""

from __future__ import annotations

import io
import struct
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import fastavro
import pytest

from streams.avro_codec import Unsupported, compile_record
from streams.records import RECORD_TYPES
from streams.schemas import load_catalog
from tests.unit.conftest import make_sample

CATALOG = load_catalog()

EVERYTHING = {
    "type": "record",
    "name": "Everything",
    "namespace": "taskstream.test",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "flag", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "raw", "type": "bytes"},
        {"name": "s", "type": "string"},
        {"name": "u", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "e", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "tags", "type": {"type": "map", "values": "long"}},
        {"name": "names", "type": {"type": "array", "items": ["null", "string"]}},
        {"name": "maybe", "type": ["null", "double"]},
        {"name": "later", "type": ["string", "null"]},
    ],
}


def _fastavro_bytes(schema: dict, values: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), values)
    return buf.getvalue()


def _fastavro_fields(schema: dict, data: bytes) -> dict:
    fields = fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(schema), None)
    return {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in fields.items()}


def _everything(**overrides) -> dict:
    values = {
        "n": None,
        "flag": True,
        "i": -7,
        "l": 1234567890123,
        "f": 0.5,
        "d": -2.25,
        "raw": b"\x00\xff",
        "s": "grüße ✓",
        "u": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "t": datetime(2026, 11, 23, 5, 6, 7, 891011, tzinfo=UTC),
        "e": "GREEN",
        "tags": {"a": 1, "b": -300},
        "names": ["x", None, "z"],
        "maybe": 1.5,
        "later": None,
    }
    return values | overrides


def _assert_like_fastavro(schema: dict, values: dict) -> None:
    codec = compile_record(schema)
    data = codec.encode(SimpleNamespace(**values), b"")
    assert data == _fastavro_bytes(schema, values)
    assert codec.decode(data, 0) == _fastavro_fields(schema, data)


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_every_record_type_is_compiled_and_matches_fastavro(name):
    schema = CATALOG.raw[name]
    codec = compile_record(schema)  # raises Unsupported if a schema outgrew the compiler
    for record in (make_sample(RECORD_TYPES[name]), _sparse(RECORD_TYPES[name])):
        data = codec.encode(record, b"\x00prefix")
        assert data[:7] == b"\x00prefix"
        assert data[7:] == _fastavro_bytes(schema, record.model_dump())
        fields = codec.decode(data, 7)
        assert fields == _fastavro_fields(schema, data[7:])
        assert RECORD_TYPES[name].model_validate(fields) == record


def _sparse(model):
    """The sample with every optional field left out (None or its default)."""
    full = make_sample(model)
    required = {n: getattr(full, n) for n, f in model.model_fields.items() if f.is_required()}
    return model(**required)


@pytest.mark.parametrize(
    "overrides",
    [
        {"l": 0, "i": 0},
        {"l": 63, "i": -64},
        {"l": 64, "i": -65},
        {"l": 2**63 - 1, "i": 2**31 - 1},
        {"l": -(2**63), "i": -(2**31)},
        {"s": "", "raw": b"", "tags": {}, "names": []},
        {"s": "x" * 63, "raw": b"y" * 64},
        {"s": "é" * 5000, "names": ["n"] * 300},
        {"tags": {f"k{i}": i * 1000 for i in range(200)}},
        {"t": datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC)},
        {"t": 1_700_000_000_000_000},
        {"t": datetime(2026, 1, 1, 12, 0, tzinfo=UTC) + timedelta(hours=-3)},
        {"u": "12345678-1234-5678-1234-567812345678"},
        {"flag": False, "e": "RED", "maybe": None, "later": "here"},
    ],
)
def test_edge_values_match_fastavro(overrides):
    _assert_like_fastavro(EVERYTHING, _everything(**overrides))


def test_a_naive_datetime_is_written_as_utc_whatever_the_host_time_zone():
    codec = compile_record(EVERYTHING)
    naive = codec.encode(SimpleNamespace(**_everything(t=datetime(2026, 1, 1, 12, 0))), b"")
    aware = codec.encode(
        SimpleNamespace(**_everything(t=datetime(2026, 1, 1, 12, 0, tzinfo=UTC))), b""
    )
    assert naive == aware
    assert codec.decode(naive, 0)["t"] == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"i": 2**31}, "is not int"),
        ({"l": 2**63}, "is not long"),
        ({"t": 2**63}, "is not long"),
        ({"e": "BLUE"}, "is not one of RED, GREEN"),
        ({"n": 0}, "is not null"),
    ],
)
def test_values_outside_the_schema_are_refused(overrides, message):
    codec = compile_record(EVERYTHING)
    with pytest.raises(ValueError, match=message):
        codec.encode(SimpleNamespace(**_everything(**overrides)), b"")


def test_wrong_python_types_are_refused():
    codec = compile_record(EVERYTHING)
    for overrides in ({"s": 5}, {"d": "x"}, {"l": 1.5}):
        with pytest.raises((TypeError, AttributeError, ValueError, struct.error)):
            codec.encode(SimpleNamespace(**_everything(**overrides)), b"")


def test_blocks_with_a_negative_count_carry_their_size():
    schema = {
        "type": "record",
        "name": "Blocks",
        "fields": [{"name": "m", "type": {"type": "map", "values": "string"}}],
    }
    # one block of -2 items and 8 bytes ("a" -> "x", "b" -> "y"), then the end
    data = bytes([3, 16, 2, ord("a"), 2, ord("x"), 2, ord("b"), 2, ord("y"), 0])
    assert compile_record(schema).decode(data, 0) == {"m": {"a": "x", "b": "y"}}
    assert _fastavro_fields(schema, data) == {"m": {"a": "x", "b": "y"}}


def test_truncated_and_corrupt_bodies_raise():
    codec = compile_record(EVERYTHING)
    data = codec.encode(SimpleNamespace(**_everything()), b"")
    for cut in range(len(data)):
        with pytest.raises((ValueError, IndexError, struct.error)):
            codec.decode(data[:cut], 0)
    union_with_bad_tag = bytearray(
        compile_record(_one_field(["null", "string"])).encode(SimpleNamespace(x="a"), b"")
    )
    union_with_bad_tag[0] = 4
    with pytest.raises(ValueError, match="union branch tag 4"):
        compile_record(_one_field(["null", "string"])).decode(bytes(union_with_bad_tag), 0)
    enum = {"type": "enum", "name": "E", "symbols": ["A"]}
    with pytest.raises(ValueError, match="enum index 1 is out of range"):
        compile_record(_one_field(enum)).decode(b"\x02", 0)
    with pytest.raises(ValueError, match="runs past the end"):
        compile_record(_one_field("string")).decode(b"\x08ab", 0)


def _one_field(field_type) -> dict:
    return {"type": "record", "name": "One", "fields": [{"name": "x", "type": field_type}]}


@pytest.mark.parametrize(
    "field_type",
    [
        ["null", "string", "long"],
        ["string", "long"],
        {"type": "record", "name": "Inner", "fields": []},
        {"type": "fixed", "name": "F", "size": 4},
        {"type": "long", "logicalType": "timestamp-millis"},
        {"type": "bytes", "logicalType": "decimal", "precision": 4},
        "taskstream.test.Named",
    ],
)
def test_what_is_not_compiled_says_so(field_type):
    with pytest.raises(Unsupported):
        compile_record(_one_field(field_type))


@pytest.mark.parametrize("name", ["class", "with-dash", "1st"])
def test_field_names_that_are_not_attribute_names_are_not_compiled(name):
    schema = {"type": "record", "name": "R", "fields": [{"name": name, "type": "long"}]}
    with pytest.raises(Unsupported, match="not a Python attribute name"):
        compile_record(schema)
