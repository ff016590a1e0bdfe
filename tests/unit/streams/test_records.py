"""The pydantic models mirror the `.avsc` files exactly, and the five seed events carry
exactly the fields Sartiq's document lists (SEED_INVENTORY §2.2)."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import fastavro
import pytest
from pydantic_core import PydanticUndefined

from streams.records import RECORD_TYPES, Record
from streams.schemas import load_catalog

CATALOG = load_catalog()

ENVELOPE = {
    "entity_id",
    "event_type",
    "metadata",
    "origin_instance",
    "origin_version",
    "origin_zone",
    "status",
    "task_id",
    "timestamp",
}
SEED_EVENTS = {
    "taskstream.events.TaskCreatedEvent": ENVELOPE | {"created_at", "task_type", "total_steps"},
    "taskstream.events.TaskStatusEvent": ENVELOPE
    | {"completed_at", "error_category", "error_message", "progress", "started_at", "task_type"},
    "taskstream.events.InferenceStatusEvent": ENVELOPE
    | {
        "backend_generation_id",
        "backend_prediction_id",
        "completed_at",
        "error_message",
        "prompt_id",
        "refined_image_path",
        "result_image_path",
    },
    "taskstream.events.PreprocessingStatusEvent": ENVELOPE
    | {
        "completed_at",
        "current_stage",
        "error_message",
        "processed_dataset_path",
        "processed_files_count",
        "progress",
        "total_files_count",
    },
    "taskstream.events.TrainingStatusEvent": ENVELOPE
    | {
        "completed_at",
        "current_step",
        "error_message",
        "eta_seconds",
        "local_model_path",
        "progress",
        "total_steps",
    },
}
# Fields the seed renders as a plain type (not a union): they must not be nullable.
SEED_REQUIRED = {
    "event_type",
    "status",
    "task_id",
    "created_at",
    "task_type",
    "total_steps",
    "progress",
    "backend_generation_id",
    "backend_prediction_id",
    "processed_files_count",
    "total_files_count",
    "current_step",
}


def test_every_schema_has_a_model_and_every_model_a_schema():
    assert set(CATALOG.names) == set(RECORD_TYPES)


@pytest.mark.parametrize("name", sorted(SEED_EVENTS))
def test_seed_events_have_exactly_the_seed_fields(name):
    fields = {f["name"] for f in CATALOG.raw[name]["fields"]}
    assert fields == SEED_EVENTS[name]
    for field in CATALOG.raw[name]["fields"]:
        nullable = isinstance(field["type"], list) and "null" in field["type"]
        assert nullable == (field["name"] not in SEED_REQUIRED), field["name"]


def test_task_status_event_status_is_the_task_status_enum():
    status = next(
        f
        for f in CATALOG.raw["taskstream.events.TaskStatusEvent"]["fields"]
        if f["name"] == "status"
    )
    assert status["type"]["type"] == "enum"
    assert {"PENDING", "EXECUTING", "COMPLETED", "FAILED", "CANCELLED"} <= set(
        status["type"]["symbols"]
    )


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _expected_python(avro_type: Any) -> Any:
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical == "uuid":
            return UUID
        if logical in ("timestamp-millis", "timestamp-micros"):
            return datetime
        kind = avro_type["type"]
        if kind == "enum":
            return ("enum", tuple(avro_type["symbols"]))
        if kind == "array":
            return list[_expected_python(avro_type["items"])]
        if kind == "map":
            return dict[str, _expected_python(avro_type["values"])]
        return _expected_python(kind)
    return {
        "string": str,
        "int": int,
        "long": int,
        "double": float,
        "float": float,
        "boolean": bool,
    }[avro_type]


def _describe(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return ("enum", tuple(m.value for m in annotation))
    return annotation


def _enum_defs(schema: Any, found: dict[str, dict]) -> dict[str, dict]:
    if isinstance(schema, dict):
        if schema.get("type") == "enum":
            found[schema["namespace"] + "." + schema["name"]] = schema
        for value in schema.values():
            _enum_defs(value, found)
    elif isinstance(schema, list):
        for value in schema:
            _enum_defs(value, found)
    return found


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_model_agrees_with_schema(name):
    model: type[Record] = RECORD_TYPES[name]
    schema = CATALOG.raw[name]
    enums = _enum_defs(schema, {})
    assert list(model.model_fields) == [f["name"] for f in schema["fields"]], (
        "same fields, same order"
    )
    for field in schema["fields"]:
        info = model.model_fields[field["name"]]
        avro_type = field["type"]
        nullable = isinstance(avro_type, list)
        if nullable:
            avro_type = next(t for t in avro_type if t != "null")
        if isinstance(avro_type, str) and avro_type in enums:
            avro_type = enums[avro_type]
        inner, optional = _strip_optional(info.annotation)
        assert optional == nullable, f"{field['name']}: nullability differs"
        assert _describe(inner) == _expected_python(avro_type), f"{field['name']}: type differs"
        if "default" in field:
            assert info.default == field["default"], f"{field['name']}: default differs"
        else:
            assert info.default is PydanticUndefined, (
                f"{field['name']}: model has a default the schema lacks"
            )


@pytest.mark.parametrize("name", sorted(CATALOG.names))
def test_enums_have_a_default_symbol_so_they_can_grow(name):
    for enum in _enum_defs(CATALOG.raw[name], {}).values():
        assert enum.get("default") in enum["symbols"], enum["name"]


@pytest.mark.parametrize("name", sorted(CATALOG.names))
def test_schemas_parse_and_accept_a_model_instance(name, sample_record):
    record = sample_record(RECORD_TYPES[name])
    assert fastavro.validation.validate(
        record.model_dump(), CATALOG.parsed(name), raise_errors=True
    )
