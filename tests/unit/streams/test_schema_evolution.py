"""Every schema can read data written with its released version, and the compatibility
rules themselves catch the changes that would break old data."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import fastavro
import pytest

from streams.compat import backward_problems
from streams.records import RECORD_TYPES
from streams.schemas import load_catalog, schema_dir
from tests.unit.conftest import make_sample

CURRENT = load_catalog()
RELEASED = load_catalog(schema_dir() / "released")


def test_every_released_schema_is_still_present():
    assert set(RELEASED.names) <= set(CURRENT.names), "a released record was removed"


@pytest.mark.parametrize("name", sorted(RELEASED.names))
def test_current_schema_reads_data_written_with_the_released_one(name):
    released, current = RELEASED.raw[name], CURRENT.raw[name]
    assert backward_problems(current, released) == []
    # And for real: write with the released schema, read with the current one.
    sample = make_sample(RECORD_TYPES[name]).model_dump()
    released_fields = {f["name"] for f in released["fields"]}
    buf = io.BytesIO()
    fastavro.schemaless_writer(
        buf, RELEASED.parsed(name), {k: v for k, v in sample.items() if k in released_fields}
    )
    buf.seek(0)
    decoded = fastavro.schemaless_reader(buf, RELEASED.parsed(name), CURRENT.parsed(name))
    RECORD_TYPES[name].model_validate(decoded)


def _record(*fields: dict) -> dict:
    return {"type": "record", "name": "R", "namespace": "t", "fields": list(fields)}


STATUS = {"type": "enum", "name": "S", "symbols": ["UNKNOWN", "A", "B"], "default": "UNKNOWN"}


@pytest.mark.parametrize(
    ("reader", "writer", "problem"),
    [
        (
            _record({"name": "a", "type": "int"}, {"name": "b", "type": "string"}),
            _record({"name": "a", "type": "int"}),
            "new field has no default",
        ),
        (
            _record({"name": "a", "type": "int"}),
            _record({"name": "a", "type": "string"}),
            "cannot be read as int",
        ),
        (
            _record({"name": "a", "type": "int"}),
            _record({"name": "a", "type": ["null", "int"]}),
            "cannot be read as int",
        ),
        (
            _record({"name": "s", "type": {**STATUS, "symbols": ["A"], "default": None}}),
            _record({"name": "s", "type": STATUS}),
            "unknown to the reader",
        ),
    ],
)
def test_incompatible_changes_are_caught(reader, writer, problem):
    reader = json.loads(json.dumps(reader).replace(', "default": null', ""))
    problems = backward_problems(reader, writer)
    assert problems and problem in problems[0]


@pytest.mark.parametrize(
    ("reader", "writer"),
    [
        (
            _record(
                {"name": "a", "type": "int"},
                {"name": "b", "type": ["null", "string"], "default": None},
            ),
            _record({"name": "a", "type": "int"}),
        ),
        (_record({"name": "a", "type": "long"}), _record({"name": "a", "type": "int"})),
        (
            _record({"name": "a", "type": ["null", "int"], "default": None}),
            _record({"name": "a", "type": "int"}),
        ),
        (
            _record({"name": "s", "type": {**STATUS, "symbols": ["UNKNOWN", "A"]}}),
            _record({"name": "s", "type": STATUS}),
        ),
        (
            _record({"name": "a", "type": "int"}),
            _record({"name": "a", "type": "int"}, {"name": "gone", "type": "int"}),
        ),
    ],
)
def test_compatible_changes_pass(reader, writer):
    assert backward_problems(reader, writer) == []


def test_a_real_breaking_edit_of_a_shipped_schema_is_caught(tmp_path: Path):
    schema = copy.deepcopy(CURRENT.raw["taskstream.commands.CreateTask"])
    schema["fields"].append({"name": "must_have", "type": "string"})
    assert backward_problems(schema, RELEASED.raw["taskstream.commands.CreateTask"]) == [
        "must_have: new field has no default, so old data cannot fill it"
    ]
