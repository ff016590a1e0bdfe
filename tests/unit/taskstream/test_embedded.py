"""`die_with_parent`: a child whose parent is already gone when it starts never runs."""

from __future__ import annotations

import os
import signal
import subprocess

from taskstream.embedded import die_with_parent


def _run_with(preexec) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        ["/bin/echo", "ran"],
        preexec_fn=preexec,  # noqa: PLW1509
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_a_child_of_a_live_parent_runs():
    assert _run_with(die_with_parent(signal.SIGTERM)).stdout == "ran\n"


def test_a_child_whose_parent_died_before_the_prctl_exits_before_running(monkeypatch):
    # As if made by a parent that died between the fork and the prctl: the child's parent
    # is no longer the process that asked.
    monkeypatch.setattr(os, "getpid", lambda: 1)
    orphaned = die_with_parent(signal.SIGTERM)
    monkeypatch.undo()
    done = _run_with(orphaned)
    assert (done.returncode, done.stdout) == (1, "")
