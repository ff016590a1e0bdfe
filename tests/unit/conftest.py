"""Helpers for unit tests: sample records built from the models themselves, and an
in-memory schema registry."""

from __future__ import annotations

import types
import typing
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pytest

from streams.records import Record
from streams.registry import RegistryError


def _sample(annotation: Any, name: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _sample(next(a for a in typing.get_args(annotation) if a is not type(None)), name)
    if origin is list:
        return [_sample(typing.get_args(annotation)[0], name)]
    if origin is dict:
        return {"k": _sample(typing.get_args(annotation)[1], name)}
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return list(annotation)[1]
    return {
        str: f"sample-{name}",
        int: 7,
        float: 42.5,
        bool: True,
        uuid.UUID: uuid.uuid4(),
        datetime: datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    }[annotation]


def make_sample(model: type[Record], **overrides: Any) -> Record:
    """An instance with every field set (optional ones too), so round trips test every field."""
    values = {n: _sample(f.annotation, n) for n, f in model.model_fields.items()}
    values.update(overrides)
    return model(**values)


@pytest.fixture
def sample_record():
    return make_sample


class MemoryRegistry:
    """The SchemaRegistry protocol over two dicts (the real ones have contract tests)."""

    def __init__(self) -> None:
        self.by_id: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}

    def register(self, subject: str, schema: str) -> int:
        existing = [i for i, text in self.by_id.items() if text == schema]
        schema_id = existing[0] if existing else len(self.by_id) + 1
        self.by_id[schema_id] = schema
        self.subjects.setdefault(subject, []).append(schema_id)
        return schema_id

    def schema_by_id(self, schema_id: int) -> str:
        if schema_id not in self.by_id:
            raise RegistryError(f"no schema {schema_id}")
        return self.by_id[schema_id]
