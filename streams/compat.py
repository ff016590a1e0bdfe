"""Avro schema compatibility by the specification's resolution rules.

`backward_problems(reader, writer)` lists why a consumer holding `reader` could not read data
written with `writer` (empty list: compatible). The built-in registry uses it for its
BACKWARD compatibility level and the schema evolution test uses it against released schemas.
Pure: schemas in, strings out.
"""

from __future__ import annotations

from typing import Any

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def backward_problems(reader: Any, writer: Any) -> list[str]:
    """Reasons data written with `writer` cannot be read with `reader` (empty: compatible)."""
    return _Resolver().check(reader, writer, "")


class _Resolver:
    def __init__(self) -> None:
        self.named: dict[str, dict[str, Any]] = {}
        self.seen: set[tuple[str, str]] = set()

    def _remember(self, schema: Any, namespace: str) -> tuple[Any, str]:
        """Resolve named references and return (schema, its namespace)."""
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return schema, namespace
            full = schema if "." in schema else f"{namespace}.{schema}".lstrip(".")
            if full not in self.named:
                raise ValueError(f"unknown named type {schema}")
            return self.named[full], full.rpartition(".")[0]
        if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
            ns = schema.get("namespace", namespace)
            full = schema["name"] if "." in schema["name"] else f"{ns}.{schema['name']}".lstrip(".")
            self.named.setdefault(full, schema)
            return schema, full.rpartition(".")[0]
        return schema, namespace

    def check(self, reader: Any, writer: Any, path: str, rns: str = "", wns: str = "") -> list[str]:
        reader, rns = self._remember(reader, rns)
        writer, wns = self._remember(writer, wns)
        where = path or "<root>"
        if isinstance(writer, list):
            # Every branch the writer may have used must be readable.
            problems = []
            for branch in writer:
                problems += self.check(reader, branch, path, rns, wns)
            return problems
        if isinstance(reader, list):
            for branch in reader:
                if not self.check(branch, writer, path, rns, wns):
                    return []
            return [f"{where}: no branch of the reader's union reads the writer's {_kind(writer)}"]
        rk, wk = _kind(reader), _kind(writer)
        if rk in _PRIMITIVES or wk in _PRIMITIVES:
            if rk == wk or rk in _PROMOTIONS.get(wk, set()):
                return []
            return [f"{where}: writer's {wk} cannot be read as {rk}"]
        if rk != wk:
            return [f"{where}: writer's {wk} cannot be read as {rk}"]
        if rk == "array":
            return self.check(reader["items"], writer["items"], f"{path}[]", rns, wns)
        if rk == "map":
            return self.check(reader["values"], writer["values"], f"{path}{{}}", rns, wns)
        if reader.get("name", "").rpartition(".")[2] != writer.get("name", "").rpartition(".")[
            2
        ] and not set(reader.get("aliases", [])) & {writer.get("name")}:
            return [f"{where}: named type {writer.get('name')} is read as {reader.get('name')}"]
        if rk == "fixed":
            return [] if reader["size"] == writer["size"] else [f"{where}: fixed size changed"]
        if rk == "enum":
            missing = set(writer["symbols"]) - set(reader["symbols"])
            if missing and "default" not in reader:
                return [
                    f"{where}: enum symbols {sorted(missing)} unknown to the reader, which has no default"
                ]
            return []
        return self._record(reader, writer, path, rns, wns)

    def _record(self, reader: dict, writer: dict, path: str, rns: str, wns: str) -> list[str]:
        key = (f"{rns}.{reader['name']}", f"{wns}.{writer['name']}")
        if key in self.seen:  # recursive types: assume compatible on re-entry
            return []
        self.seen.add(key)
        writer_fields = {f["name"]: f for f in writer["fields"]}
        problems = []
        for field in reader["fields"]:
            names = [field["name"], *field.get("aliases", [])]
            match = next((writer_fields[n] for n in names if n in writer_fields), None)
            sub = f"{path}.{field['name']}".lstrip(".")
            if match is None:
                if "default" not in field:
                    problems.append(f"{sub}: new field has no default, so old data cannot fill it")
                continue
            problems += self.check(field["type"], match["type"], sub, rns, wns)
        return problems


def _kind(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind = schema.get("type")
    if isinstance(kind, (dict, list)):
        return _kind(kind)
    return kind
