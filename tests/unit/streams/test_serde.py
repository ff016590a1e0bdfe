"""Confluent wire format, schema resolution across versions, and clear decoding errors."""

from __future__ import annotations

import copy
import io
import json
import struct

import fastavro
import pytest

from streams.records import RECORD_TYPES, TaskStatus, WorkerReport
from streams.schemas import SchemaCatalog, load_catalog
from streams.serde import AvroSerde, SerializationError
from tests.unit.conftest import MemoryRegistry, make_sample


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
def serde(registry: MemoryRegistry) -> AvroSerde:
    return AvroSerde(registry, load_catalog())


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_every_record_round_trips(serde, name):
    record = make_sample(RECORD_TYPES[name])
    assert serde.deserialize(serde.serialize(record)) == record


def test_wire_format_is_magic_byte_then_schema_id(serde, registry):
    record = make_sample(WorkerReport)
    data = serde.serialize(record)
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert json.loads(registry.by_id[schema_id])["name"] == "WorkerReport"
    assert registry.subjects["taskstream.workers.WorkerReport"] == [schema_id]


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_record_name_is_read_from_the_schema_id_alone(serde, name):
    assert serde.record_name(serde.serialize(make_sample(RECORD_TYPES[name]))) == name


@pytest.mark.parametrize(
    "data", [None, b"", b"\x00\x00", b"\x01\x00\x00\x00\x01x", b"\x00\x00\x00\x03\xe7x"]
)
def test_record_name_of_a_foreign_value_is_none(serde, data):
    assert serde.record_name(data) is None


def test_a_newer_writers_extra_field_is_ignored(registry):
    """A producer on a newer schema version (one more field) is still readable by us."""
    catalog = load_catalog()
    name = "taskstream.workers.WorkerReport"
    newer = copy.deepcopy(catalog.raw[name])
    newer["fields"].append({"name": "gpu_seconds", "type": "double", "default": 0.0})
    newer_catalog = SchemaCatalog({name: newer})
    schema_id = registry.register(name + ".next", newer_catalog.text(name))
    record = make_sample(WorkerReport, status=TaskStatus.COMPLETED)
    buf = io.BytesIO(struct.pack(">bI", 0, schema_id))
    buf.seek(5)
    fastavro.schemaless_writer(
        buf, newer_catalog.parsed(name), {**record.model_dump(), "gpu_seconds": 1.5}
    )
    assert AvroSerde(registry, catalog).deserialize(buf.getvalue()) == record


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty or shorter"),
        (b"\x00\x00", "empty or shorter"),
        (b"\x01\x00\x00\x00\x01abc", "unknown magic byte 1"),
        (b"\x00\x00\x00\x03\xe7abc", "unknown schema id 999"),
        (b'{"task_id": "not avro"}', "unknown magic byte"),
    ],
)
def test_undecodable_values_raise_with_a_reason(serde, data, reason):
    serde.register_all()
    with pytest.raises(SerializationError, match=reason):
        serde.deserialize(data)


def test_a_truncated_body_is_a_serialization_error(serde):
    data = serde.serialize(make_sample(WorkerReport))
    with pytest.raises(SerializationError, match="cannot decode taskstream.workers.WorkerReport"):
        serde.deserialize(data[:12])


def test_a_record_taskstream_does_not_read_is_refused(serde, registry):
    schema_id = registry.register(
        "other", json.dumps({"type": "record", "name": "Alien", "fields": []})
    )
    with pytest.raises(SerializationError, match="Alien .* not one taskstream reads"):
        serde.deserialize(struct.pack(">bI", 0, schema_id))


def test_a_record_that_does_not_fit_its_schema_is_a_serialization_error(serde):
    record = WorkerReport.model_construct(**{**make_sample(WorkerReport).__dict__, "progress": "x"})
    with pytest.raises(SerializationError, match="does not fit its schema"):
        serde.serialize(record)
