"""`HttpSchemaRegistry` when the registry is not there (yet): every failure is a
`RegistryError`, so `connect_serde` waits for a registry that is still starting (in the
embedded stack the API serves it, and the processors and workers start beside it)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.registry import HttpSchemaRegistry, RegistryError
from streams.runtime import connect_serde
from streams.schemas import load_catalog
from taskstream.embedded import free_port


def test_an_unreachable_registry_fails_as_registry_error():
    registry = HttpSchemaRegistry(f"http://127.0.0.1:{free_port()}")  # nothing listens
    try:
        with pytest.raises(RegistryError, match="registering t.Thing"):
            registry.register("t.Thing", '{"type": "string"}')
        with pytest.raises(RegistryError, match="schema id 1"):
            registry.schema_by_id(1)
    finally:
        registry.close()


class _Registry(BaseHTTPRequestHandler):
    """Just enough of the Confluent API to register: each subject gets the next id."""

    subjects: dict[str, int] = {}  # noqa: RUF012 - one server per test

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        subject = self.path.split("/")[2]
        schema_id = self.subjects.setdefault(subject, len(self.subjects) + 1)
        body = json.dumps({"id": schema_id}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_connect_serde_waits_for_a_registry_that_starts_late():
    port = free_port()
    servers: list[ThreadingHTTPServer] = []

    def start_late() -> None:
        time.sleep(1.5)  # connect_serde's first attempts are refused
        servers.append(ThreadingHTTPServer(("127.0.0.1", port), _Registry))
        servers[0].serve_forever()

    threading.Thread(target=start_late, daemon=True).start()
    started = time.monotonic()
    serde, registry = connect_serde(f"http://127.0.0.1:{port}", None, wait_s=30)
    try:
        assert time.monotonic() - started >= 1.5
        names = load_catalog().names
        assert sorted(_Registry.subjects) == sorted(names)
        assert {serde.schema_id(n) for n in names} == set(_Registry.subjects.values())
    finally:
        registry.close()
        servers[0].shutdown()
        servers[0].server_close()
