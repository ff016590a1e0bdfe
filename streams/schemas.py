"""The one place that loads the `.avsc` files under `schemas/avro/`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro


@dataclass(frozen=True)
class SchemaCatalog:
    """Every record schema by its Avro full name (`namespace.Name`), as JSON and parsed."""

    raw: dict[str, dict[str, Any]]
    _parsed: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def names(self) -> list[str]:
        return sorted(self.raw)

    def text(self, name: str) -> str:
        """The schema as the compact JSON string registered with a schema registry."""
        return json.dumps(self.raw[name], separators=(",", ":"))

    def parsed(self, name: str) -> Any:
        if name not in self._parsed:
            # fastavro mutates what it parses; give it a copy so `raw` stays pristine.
            self._parsed[name] = fastavro.parse_schema(json.loads(self.text(name)))
        return self._parsed[name]


def schema_dir() -> Path:
    return Path(str(resources.files("schemas.avro")))


def load_catalog(directory: Path | None = None) -> SchemaCatalog:
    """Read `<namespace>.<Name>.avsc` files; the file name must match the record's full name."""
    directory = directory or schema_dir()
    raw: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.avsc")):
        schema = json.loads(path.read_text())
        name = f"{schema['namespace']}.{schema['name']}"
        if path.stem != name:
            raise ValueError(f"{path.name} holds record {name}; rename the file to {name}.avsc")
        raw[name] = schema
    return SchemaCatalog(raw)
