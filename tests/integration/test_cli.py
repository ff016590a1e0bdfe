"""The pieces run alone: `taskstream migrate` against a given DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys


def test_migrate_alone(database_url):
    env = {**os.environ, "DATABASE_URL": database_url}
    out = subprocess.run(
        [sys.executable, "-m", "taskstream", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "applied: nothing (up to date)"


def test_processes_refuse_to_start_without_infrastructure():
    env = {
        k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    }
    out = subprocess.run(
        [sys.executable, "-m", "taskstream", "worker", "inference"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "KAFKA_BOOTSTRAP_SERVERS is not set" in out.stderr
