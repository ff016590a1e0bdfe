"""The services' stop event: a process that cannot finish stopping still ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

_SERVICE = textwrap.dedent(
    """
    import os, signal, sys, time
    from taskstream.cli import _stop_on_signals

    stop = _stop_on_signals(deadline_s=float(sys.argv[1]))
    print("ready", flush=True)
    stop.wait()
    time.sleep(float(sys.argv[2]))  # the drain: quick, or stuck on a broker that is gone
    print("drained", flush=True)
    """
)


def _stopped(drain_s: float) -> tuple[subprocess.CompletedProcess, float]:
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", _SERVICE, "1.0", str(drain_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    started = time.monotonic()
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), (
        time.monotonic() - started
    )


def test_a_stuck_drain_is_cut_off_at_the_deadline():
    done, took = _stopped(drain_s=60)
    assert done.returncode == 1
    assert "drained" not in done.stdout
    assert "still stopping 1s after the stop; exiting without finishing" in done.stderr
    assert took < 20


@pytest.mark.parametrize("drain_s", [0.0, 0.2])
def test_a_drain_that_finishes_in_time_exits_cleanly(drain_s):
    done, _ = _stopped(drain_s)
    assert (done.returncode, done.stdout, done.stderr) == (0, "drained\n", "")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            ["api"],
            {"TASKSTREAM_KAFKA_SESSION_TIMEOUT_MS": "abc"},
            "taskstream api: bad setting: TASKSTREAM_KAFKA_SESSION_TIMEOUT_MS: Input should be"
            " a valid integer",
        ),
        (["migrate"], {}, "taskstream migrate: DATABASE_URL is not set"),
        (["processors"], {}, "taskstream processors: KAFKA_BOOTSTRAP_SERVERS is not set"),
    ],
)
def test_a_missing_or_bad_setting_is_one_line_and_exit_2(argv, env, message, monkeypatch, capsys):
    """It was a traceback ending in the reason."""
    from taskstream import cli

    monkeypatch.setattr(cli, "_logging", lambda settings, role: None)  # keep pytest's logging
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
