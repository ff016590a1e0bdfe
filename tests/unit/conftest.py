"""Helpers for unit tests: sample records built from the models themselves."""

from __future__ import annotations

import types
import typing
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pytest

from streams.records import Record


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
