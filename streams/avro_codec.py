"""Avro binary encoding compiled per record schema, for the records taskstream writes most.

fastavro's generic writer and reader spend 10-15 µs per record on our flat records, most of
it dispatching on the type of every field and trying union branches one by one. This module
writes, once per schema, the Python source of one function that encodes a pydantic record
straight from its attributes (no `model_dump`) and one that decodes to a field dict, with the
one-byte case of lengths, tags and small numbers inline, the way `dataclasses` builds its
`__init__`. The bytes are Avro's binary encoding, so anything written here reads anywhere and
vice versa; `tests/unit/streams/test_avro_codec.py` checks both against fastavro for every
schema in the catalog.

Only what the catalog's schemas use is compiled: records of null, boolean, int, long, float,
double, bytes, string, enum, map and array, `[null, T]` unions, and the `uuid` and
`timestamp-micros` logical types. `compile_record` raises `Unsupported` for anything else and
the caller keeps fastavro for that schema. Reading a value written with another version of
its schema (schema resolution) is always fastavro's job.

Decoded `uuid` fields stay text (the pydantic record parses them; `UUID()` costs 2.5 µs),
timestamps are aware UTC datetimes and enums their symbol, as fastavro returns them.
One deliberate difference: a naive datetime is written as UTC, where fastavro takes it as
the host's local time; taskstream's records carry aware UTC datetimes, and a record's bytes
should not depend on the time zone of the machine that wrote it.
"""

from __future__ import annotations

import keyword
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)  # a naive datetime is taken as UTC (see the docstring)
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_RANGES = {"int": range(-(2**31), 2**31), "long": range(-(2**63), 2**63)}


class Unsupported(Exception):
    """The schema uses something this module does not compile."""


@dataclass(frozen=True)
class RecordCodec:
    name: str
    encode: Callable[[Any, bytes], bytes]  # (record object, prefix) -> prefix + body
    decode: Callable[[bytes, int], dict[str, Any]]  # (data, body offset) -> fields
    source: str  # of both, for reading when something looks wrong


def compile_record(schema: dict[str, Any]) -> RecordCodec:
    """A codec for a record schema given as JSON (`Unsupported` if it uses anything else)."""
    if schema.get("type") != "record":
        raise Unsupported(f"top-level type {schema.get('type')!r} is not a record")
    name = f"{schema.get('namespace', '')}.{schema['name']}".lstrip(".")
    gen = _Generator()
    encode = ["def encode(record, prefix):", "    out = bytearray(prefix)"]
    decode = ["def decode(data, pos):", "    size = len(data)"]
    results = []
    for field in schema["fields"]:
        value = gen.name("v")
        encode.append(f"    {value} = record.{_identifier(field['name'])}")
        encode.extend(_indent(gen.write(field["type"], value)))
        decode.extend(_indent(gen.read(field["type"], value)))
        results.append(f"{field['name']!r}: {value}")
    encode.append("    return bytes(out)")
    decode.append(f"    return {{{', '.join(results)}}}")
    source = "\n".join([*encode, "", *decode, ""])
    namespace = dict(gen.constants, **_HELPERS)
    exec(compile(source, f"<avro codec {name}>", "exec"), namespace)  # noqa: S102 - our own text
    return RecordCodec(name, namespace["encode"], namespace["decode"], source)


def _identifier(name: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise Unsupported(f"field name {name!r} is not a Python attribute name")
    return name


def _indent(lines: list[str], levels: int = 1) -> Iterator[str]:
    return ("    " * levels + line for line in lines)


class _Generator:
    """Source lines that write or read one value of a schema type, in a local variable."""

    def __init__(self) -> None:
        self._ids = count()
        self.constants: dict[str, Any] = {}

    def name(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def constant(self, value: Any) -> str:
        name = self.name("_c")
        self.constants[name] = value
        return name

    # --- writing: append `value`'s encoding to the bytearray `out` --------------------------

    def write(self, schema: Any, value: str) -> list[str]:
        kind, logical = _kind(schema)
        if isinstance(schema, list):
            null_tag, value_tag, branch = _union(schema)
            return [
                f"if {value} is None:",
                f"    out.append({null_tag})",
                "else:",
                f"    out.append({value_tag})",
                *_indent(self.write(branch, value)),
            ]
        if logical == "uuid":
            text = self.name("t")
            return [
                f"{text} = {value} if {value}.__class__ is str else str({value})",
                *self.write("string", text),
            ]
        if logical == "timestamp-micros":
            return [f"_write_timestamp_micros({value}, out)"]
        if kind == "null":
            return [f"if {value} is not None:", f"    _not(None, {value})"]
        if kind == "boolean":
            return [f"out.append(1 if {value} else 0)"]
        if kind in ("int", "long"):
            limits = self.constant(_RANGES[kind])
            return [
                f"if -64 <= {value} < 64:",
                f"    out.append(({value} << 1) ^ ({value} >> 63))",
                f"elif {value} in {limits}:",
                f"    _write_long({value}, out)",
                "else:",
                f"    _not({kind!r}, {value})",
            ]
        if kind == "double":
            return [f"out += _DOUBLE.pack({value})"]
        if kind == "float":
            return [f"out += _FLOAT.pack({value})"]
        if kind in ("string", "bytes"):
            raw = self.name("b") if kind == "string" else value
            return [
                *([f"{raw} = {value}.encode()"] if kind == "string" else []),
                f"if len({raw}) < 64:",
                f"    out.append(len({raw}) << 1)",
                "else:",
                f"    _write_long(len({raw}), out)",
                f"out += {raw}",
            ]
        if kind == "enum":
            tags = self.constant({s: _long_bytes(i) for i, s in enumerate(schema["symbols"])})
            tag = self.name("e")
            return [
                f"{tag} = {tags}.get({value})",
                f"if {tag} is None:",
                f"    {tag} = _enum_tag({tags}, {value})",
                f"out += {tag}",
            ]
        if kind == "array":
            item = self.name("i")
            return [
                f"if {value}:",
                f"    _write_long(len({value}), out)",
                f"    for {item} in {value}:",
                *_indent(self.write(schema["items"], item), 2),
                "out.append(0)",
            ]
        if kind == "map":
            key, item = self.name("k"), self.name("i")
            return [
                f"if {value}:",
                f"    _write_long(len({value}), out)",
                f"    for {key}, {item} in {value}.items():",
                *_indent(self.write("string", key), 2),
                *_indent(self.write(schema["values"], item), 2),
                "out.append(0)",
            ]
        raise Unsupported(f"type {kind!r}")

    # --- reading: decode into `value` from `data` at `pos`, moving `pos` past it ---------------

    def read(self, schema: Any, value: str) -> list[str]:
        kind, logical = _kind(schema)
        if isinstance(schema, list):
            null_tag, value_tag, branch = _union(schema)
            return [
                "tag = data[pos]",
                "pos += 1",
                f"if tag == {null_tag}:",
                f"    {value} = None",
                f"elif tag == {value_tag}:",
                *_indent(self.read(branch, value)),
                "else:",
                "    raise ValueError(f'union branch tag {tag} is out of range')",
            ]
        if logical == "uuid":
            return self.read("string", value)
        if logical == "timestamp-micros":
            return [
                *self.read("long", value),
                f"{value} = _EPOCH + _timedelta(microseconds={value})",
            ]
        if kind == "null":
            return [f"{value} = None"]
        if kind == "boolean":
            return [f"{value} = data[pos] == 1", "pos += 1"]
        if kind in ("int", "long"):
            return [
                "tag = data[pos]",
                "if tag < 0x80:",
                f"    {value} = (tag >> 1) ^ -(tag & 1)",
                "    pos += 1",
                "else:",
                f"    {value}, pos = _read_long(data, pos)",
            ]
        if kind in ("double", "float"):
            struct_, width = ("_DOUBLE", 8) if kind == "double" else ("_FLOAT", 4)
            return [f"{value} = {struct_}.unpack_from(data, pos)[0]", f"pos += {width}"]
        if kind in ("string", "bytes"):
            end = self.name("end")
            return [
                *self.read("long", end),
                f"if {end} < 0 or pos + {end} > size:",
                f"    raise ValueError(f'a {{{end}}}-byte value runs past the end of the data')",
                f"{end} += pos",
                f"{value} = data[pos:{end}]" + (".decode()" if kind == "string" else ""),
                f"pos = {end}",
            ]
        if kind == "enum":
            symbols = self.constant(tuple(schema["symbols"]))
            return [
                *self.read("long", value),
                f"if not 0 <= {value} < {len(schema['symbols'])}:",
                f"    raise ValueError(f'enum index {{{value}}} is out of range')",
                f"{value} = {symbols}[{value}]",
            ]
        if kind in ("array", "map"):
            items, item, key = self.name("n"), self.name("i"), self.name("k")
            add = f"{value}.append({item})" if kind == "array" else f"{value}[{key}] = {item}"
            read_item = (
                self.read(schema["items"], item)
                if kind == "array"
                else [*self.read("string", key), *self.read(schema["values"], item)]
            )
            return [
                f"{value} = {'[]' if kind == 'array' else '{}'}",
                "while True:",
                *_indent(self.read("long", items)),
                f"    if {items} == 0:",
                "        break",
                f"    if {items} < 0:  # a negative count is followed by the block's size",
                f"        {items} = -{items}",
                "        _, pos = _read_long(data, pos)",
                f"    for _ in range({items}):",
                *_indent(read_item, 2),
                f"        {add}",
            ]
        raise Unsupported(f"type {kind!r}")


def _kind(schema: Any) -> tuple[str, str | None]:
    if isinstance(schema, list):
        return "union", None
    if isinstance(schema, str):
        return schema, None
    kind, logical = schema["type"], schema.get("logicalType")
    if not isinstance(kind, str):
        raise Unsupported("nested type definitions")
    if logical is not None and (kind, logical) not in _LOGICAL:
        raise Unsupported(f"logical type {logical!r} on {kind!r}")
    return kind, logical


_LOGICAL = {("string", "uuid"), ("long", "timestamp-micros")}


def _union(branches: list[Any]) -> tuple[int, int, Any]:
    """(zigzag tag byte of null, of the other branch, the other branch) of a [null, T] union."""
    if len(branches) != 2 or "null" not in branches:
        raise Unsupported("unions other than [null, T]")
    null_index = branches.index("null")
    return null_index * 2, (1 - null_index) * 2, branches[1 - null_index]


def _long_bytes(value: int) -> bytes:
    out = bytearray()
    _write_long(value, out)
    return bytes(out)


def _write_long(value: int, out: bytearray) -> None:
    n = (value << 1) ^ (value >> 63)  # zigzag
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("a long runs over 10 bytes")


def _write_timestamp_micros(value: datetime | int, out: bytearray) -> None:
    if isinstance(value, datetime):
        delta = value - (_EPOCH if value.tzinfo is not None else _EPOCH_NAIVE)
        value = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if value not in _RANGES["long"]:
        _not("long", value)
    _write_long(value, out)


def _enum_tag(tags: dict[str, bytes], value: Any) -> bytes:
    """The tag of an enum member whose name is not its value (so it hashes differently)."""
    tag = tags.get(getattr(value, "value", value))
    if tag is None:
        _not("one of " + ", ".join(tags), value)
    return tag


def _not(expected: Any, value: Any) -> None:
    raise ValueError(f"{value!r} is not {expected if expected is not None else 'null'}")


_HELPERS = {
    "_DOUBLE": _DOUBLE,
    "_FLOAT": _FLOAT,
    "_EPOCH": _EPOCH,
    "_timedelta": timedelta,
    "_write_long": _write_long,
    "_read_long": _read_long,
    "_write_timestamp_micros": _write_timestamp_micros,
    "_enum_tag": _enum_tag,
    "_not": _not,
}
