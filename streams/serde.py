"""Avro serde in Confluent's wire format: magic byte 0, 4-byte big-endian schema id, body.

Each record registers under a record-name subject (`<namespace>.<Record>`), so one topic can
carry several record types and confluent-kafka's own `AvroSerializer` (with
`subject.name.strategy=record_subject_name_strategy`) interoperates both ways.
Records written with another version of a schema are resolved against ours (the writer's
schema comes from the registry by id), which is how old and new producers coexist.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from functools import partial
from typing import Any

import fastavro

from streams.avro_codec import RecordCodec, Unsupported, compile_record
from streams.records import RECORD_TYPES, Record
from streams.registry import RegistryError, SchemaRegistry
from streams.schemas import SchemaCatalog

MAGIC = 0
_HEADER = struct.Struct(">bI")


class SerializationError(Exception):
    """A value could not be encoded or decoded; `reason` says why in plain words."""


class AvroSerde:
    def __init__(self, registry: SchemaRegistry, catalog: SchemaCatalog) -> None:
        self._registry = registry
        self._catalog = catalog
        # Caches filled on first use. Threads share them without a lock: each entry is
        # derived from the registry and the catalog alone, so a race only computes it twice.
        self._ids: dict[str, int] = {}
        self._writers: dict[int, tuple[str, Callable[[bytes], dict[str, Any]]]] = {}
        self._codecs: dict[str, RecordCodec | None] = {}

    def register_all(self) -> dict[str, int]:
        """Register every catalog schema under its record-name subject; returns name -> id."""
        for name in self._catalog.names:
            self.schema_id(name)
        return dict(self._ids)

    def schema_id(self, name: str) -> int:
        schema_id = self._ids.get(name)
        if schema_id is None:
            schema_id = self._ids[name] = self._registry.register(name, self._catalog.text(name))
        return schema_id

    def serialize(self, record: Record) -> bytes:
        name = record.avro_name
        try:
            header = _HEADER.pack(MAGIC, self.schema_id(name))
            codec = self._codec(name)
            if codec is not None:
                return codec.encode(record, header)
            buf = io.BytesIO()
            buf.write(header)
            fastavro.schemaless_writer(buf, self._catalog.parsed(name), record.model_dump())
        except RegistryError as exc:
            raise SerializationError(f"cannot register {name}: {exc}") from exc
        except (ValueError, TypeError, AttributeError, struct.error) as exc:
            raise SerializationError(f"{name} does not fit its schema: {exc}") from exc
        return buf.getvalue()

    def _codec(self, name: str) -> RecordCodec | None:
        """The compiled codec of one of our schemas (None: fastavro handles it)."""
        if name not in self._codecs:
            try:
                self._codecs[name] = compile_record(self._catalog.raw[name])
            except Unsupported:
                self._codecs[name] = None
        return self._codecs[name]

    def record_name(self, data: bytes | None) -> str | None:
        """The Avro record name a message value was written with, without decoding it
        (None when the value is not in the Confluent wire format)."""
        try:
            return self._header(data)[0]
        except SerializationError:
            return None

    def deserialize(self, data: bytes | None) -> Record:
        """Decode one message value into its pydantic record."""
        return self.build(*self.fields(data))

    def fields(self, data: bytes | None) -> tuple[str, dict[str, Any]]:
        """(record name, its fields as Avro decodes them), without building the pydantic
        record: a reader can look at a field before paying for `build`. Fields of logical
        type uuid may come as text (`build` parses them)."""
        name, schema_id, decode = self._header(data)
        if name not in RECORD_TYPES:
            raise SerializationError(
                f"record {name} (schema id {schema_id}) is not one taskstream reads"
            )
        try:
            return name, decode(data)
        except Exception as exc:  # fastavro raises a zoo of types on corrupt bodies
            raise SerializationError(
                f"cannot decode {name} (schema id {schema_id}): {exc!r}"
            ) from exc

    def build(self, name: str, fields: dict[str, Any]) -> Record:
        """The pydantic record of `fields` decoded by `fields`."""
        try:
            return RECORD_TYPES[name].model_validate(fields)
        except Exception as exc:
            raise SerializationError(f"cannot decode {name}: {exc!r}") from exc

    def _header(self, data: bytes | None) -> tuple[str, int, Callable[[bytes], dict[str, Any]]]:
        """(record name, schema id, decoder of the body) of a value in the wire format."""
        if not data or len(data) < _HEADER.size:
            raise SerializationError("value is empty or shorter than the 5-byte Confluent header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise SerializationError(f"unknown magic byte {magic}; expected Confluent wire format")
        name, decode = self._writer(schema_id)
        return name, schema_id, decode

    def _writer(self, schema_id: int) -> tuple[str, Callable[[bytes], dict[str, Any]]]:
        """(record name, how to decode a value written with that schema), decided once per
        schema id: the compiled decoder when the writer's schema is one of ours, else fastavro
        resolving the writer's schema against ours (given only when they differ: fastavro
        would otherwise compare the two in depth on every read)."""
        entry = self._writers.get(schema_id)
        if entry is not None:
            return entry
        try:
            text = self._registry.schema_by_id(schema_id)
        except RegistryError as exc:
            raise SerializationError(f"unknown schema id {schema_id}: {exc}") from exc
        schema = json.loads(text)
        name = f"{schema.get('namespace', '')}.{schema['name']}".lstrip(".")
        writer = fastavro.parse_schema(schema)
        ours = self._catalog.parsed(name) if name in self._catalog.raw else None
        codec = self._codec(name) if ours == writer else None
        if codec is not None:
            entry = (name, partial(codec.decode, pos=_HEADER.size))
        else:
            entry = (name, partial(_fastavro_decode, writer, None if ours == writer else ours))
        self._writers[schema_id] = entry
        return entry


def _fastavro_decode(writer: Any, reader: Any, data: bytes) -> dict[str, Any]:
    return fastavro.schemaless_reader(io.BytesIO(data[_HEADER.size :]), writer, reader)
