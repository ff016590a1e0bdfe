"""The supervisor: it refuses to start on a taken API port, and its shutdown tells every
child to stop exactly once.

A second SIGTERM that lands while a service is still stopping cuts its graceful stop short:
the API's aiohttp cleanup was cancelled by one and logged a CleanupError traceback on every
Ctrl-C of `make run`."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from taskstream.settings import Settings
from taskstream.stack import Child, Stack

# Counts the SIGTERMs it gets into a file and, like a service, takes `argv[2]` seconds to
# stop after the first one.
SERVICE = """
import pathlib, signal, sys, time
out, got = pathlib.Path(sys.argv[1]), []
signal.signal(signal.SIGTERM, lambda *_: (got.append(1), out.write_text(str(len(got)))))
out.write_text("0")
while not got:
    time.sleep(0.01)
time.sleep(float(sys.argv[2]))
"""


def test_shutdown_signals_each_child_once(tmp_path: Path):
    stack = Stack(Settings(data_dir=tmp_path))
    counts = [tmp_path / f"child-{i}.signals" for i in range(3)]
    # The supervisor waits for them last to first, so the first (the API, in the real stack)
    # is still stopping when the others are done: the case that got a second signal.
    stop_s = [1.0, 0.6, 0.2]
    stack.children = [
        Child(f"child-{i}", [sys.executable, "-c", SERVICE, str(path), str(s)], dict(os.environ))
        for i, (path, s) in enumerate(zip(counts, stop_s, strict=True))
    ]
    for child in stack.children:
        child.start()
    deadline = time.monotonic() + 10
    while not all(p.exists() for p in counts):  # each has its handler installed
        assert time.monotonic() < deadline
        time.sleep(0.02)

    stack._shutdown()

    assert [p.read_text() for p in counts] == ["1", "1", "1"]
    assert [c.proc.returncode for c in stack.children] == [0, 0, 0]


def test_up_refuses_to_start_on_a_taken_api_port(tmp_path: Path, caplog):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        stack = Stack(Settings(data_dir=tmp_path, api_host="127.0.0.1", api_port=port))
        assert stack.run() == 1
    assert (stack.broker, stack.postgres, stack.children) == (None, None, [])
    assert f"cannot serve the API on 127.0.0.1:{port} (Address already in use)" in caplog.text
