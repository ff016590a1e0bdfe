"""`taskstream up`: the whole system in one foreground process tree.

Refuses a taken API port, starts embedded infrastructure (unless the environment points at
real services), applies migrations, settles Postgres with an embedded broker that started
empty (`processors.fresh_broker`), creates topics, then runs the API, the processors and one
worker of each kind as child processes, restarting a child that dies (at most
`MAX_RESTARTS` a minute). SIGINT or SIGTERM stops children first (one SIGTERM each), then
Postgres and the broker, within 30 s.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from api.auth import new_token
from processors.fresh_broker import resume_on_fresh_broker
from state.db import Database
from state.migrations import migrate
from state.registry_store import RegistryStore
from streams.admin import ensure_topics
from streams.schemas import load_catalog
from streams.serde import AvroSerde
from taskstream.cli import SHUTDOWN_DEADLINE_S
from taskstream.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    check_bindable,
    die_with_parent,
    free_port,
    wait_or_kill,
)
from taskstream.settings import Settings

logger = logging.getLogger(__name__)

MAX_RESTARTS = 5
HEALTH_TIMEOUT_S = 180.0
# Children end themselves within their shutdown deadline; the supervisor's kill after this
# is only a backstop.
CHILD_STOP_TIMEOUT_S = SHUTDOWN_DEADLINE_S + 3.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    restarts: deque = field(default_factory=lambda: deque(maxlen=MAX_RESTARTS))

    def start(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509
        )
        logger.info("started %s (pid %d)", self.name, self.proc.pid)


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.stop = threading.Event()
        self.broker: EmbeddedBroker | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.children: list[Child] = []
        self.info: dict[str, str] = {}

    def run(self) -> int:
        if not self._api_port_free():
            return 1
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop.set())
        try:
            env = self._start_infrastructure()
            if self.stop.is_set():
                return 0
            self._start_children(env)
            if not self._wait_healthy():
                return 0 if self.stop.is_set() else 1
            self._announce()
            return self._supervise()
        finally:
            self._shutdown()

    def _api_port_free(self) -> bool:
        """Whether the API's port can be bound (0 picks a free one later). Checked before
        anything starts: a taken port otherwise fails the API at every restart, each with a
        traceback, until the restart budget stops the stack."""
        host, port = self.settings.api_host, self.settings.api_port
        if not port:
            return True
        try:
            check_bindable(host, port)
        except OSError as exc:
            logger.error(
                "cannot serve the API on %s:%d (%s); stop what holds it, or set "
                "TASKSTREAM_API_PORT to another port (0 picks a free one)",
                host,
                port,
                exc.strerror,
            )
            return False
        return True

    def _start_infrastructure(self) -> dict[str, str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        s = self.settings
        bootstrap = s.kafka_bootstrap_servers
        if not bootstrap:
            self.broker = EmbeddedBroker(self.data_dir / "logs" / "broker.log").start()
            bootstrap = self.broker.bootstrap
        db_url = s.database_url.get_secret_value() if s.database_url else None
        if not db_url:
            self.postgres = EmbeddedPostgres(self.data_dir / "postgres").start()
            db_url = self.postgres.url
        queues = s.queue_routing()
        with Database(db_url) as db:
            migrate(db)
            if self.broker is not None:  # started empty: see processors.fresh_broker
                serde = AvroSerde(RegistryStore(db), load_catalog())
                resume_on_fresh_broker(db, serde, queues)
        ensure_topics(bootstrap, queues.every_topic())
        port = s.api_port or free_port(s.api_host)
        token = s.admin_token.get_secret_value() if s.admin_token else new_token()
        self.settings = s.model_copy(update={"api_port": port, "admin_token": SecretStr(token)})
        self.info = {
            "api_url": f"http://{s.api_host}:{port}",
            "bootstrap_servers": bootstrap,
            "schema_registry_url": self.settings.registry_url(),
            "admin_token": token,
        }
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DATABASE_URL": db_url,
            "TASKSTREAM_DATA_DIR": str(self.data_dir),
            "TASKSTREAM_API_HOST": s.api_host,
            "TASKSTREAM_API_PORT": str(port),
            "TASKSTREAM_ADMIN_TOKEN": token,
        }
        if self.broker is not None:
            env["TASKSTREAM_KAFKA_SINGLE_RECORD_BATCHES"] = "true"  # tansu's watermark quirk
        return env

    def _start_children(self, env: dict[str, str]) -> None:
        cli = [sys.executable, "-m", "taskstream"]
        member_env = dict(env)
        if self.settings.builtin_registry:
            # The API serves the registry; everyone else reaches it over HTTP with the admin token.
            member_env["SCHEMA_REGISTRY_URL"] = self.settings.registry_url()
            member_env["SCHEMA_REGISTRY_BASIC_AUTH"] = self.settings.registry_auth() or ""
        processors = [
            Child(
                "processors" if i == 0 else f"processors-{i + 1}", [*cli, "processors"], member_env
            )
            for i in range(self.settings.processors)
        ]
        self.children = [
            Child("api", [*cli, "api"], env),
            *processors,
            Child("worker-inference", [*cli, "worker", "inference"], member_env),
            Child("worker-training", [*cli, "worker", "training"], member_env),
        ]
        for child in self.children:
            child.start()

    def _health(self) -> int | None:
        try:
            with urllib.request.urlopen(self.info["api_url"] + "/health", timeout=2) as resp:  # noqa: S310
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return None

    def _wait_healthy(self) -> bool:
        started = time.monotonic()
        while not self.stop.is_set():
            if self._health() == 200:
                logger.info("healthy after %.1fs", time.monotonic() - started)
                return True
            if time.monotonic() - started > HEALTH_TIMEOUT_S:
                logger.error(
                    "not healthy after %.0fs; see %s/health", HEALTH_TIMEOUT_S, self.info["api_url"]
                )
                return False
            self._restart_dead()
            self.stop.wait(0.5)
        return False

    def _announce(self) -> None:
        path = self.data_dir / "stack.json"
        path.write_text(json.dumps(self.info, indent=2) + "\n")
        path.chmod(0o600)  # it holds the admin token
        lines = [
            "taskstream is up",
            f"  API:              {self.info['api_url']}",
            f"  Kafka bootstrap:  {self.info['bootstrap_servers']}",
            f"  Schema registry:  {self.info['schema_registry_url']}",
            f"  Admin token:      {self.info['admin_token']}",
            f"  Written to:       {path}",
            "Ctrl-C stops everything.",
        ]
        print("\n".join(lines), flush=True)  # the CLI's own output, not a log line

    def _supervise(self) -> int:
        while not self.stop.wait(0.5):
            if self._infrastructure_died() or not self._restart_dead():
                return 1
        return 0

    def _infrastructure_died(self) -> bool:
        """Whether the embedded broker or Postgres has died, which stops the stack: without
        them nothing works, and a stack that stays up answering 503 hides it. (The broker's
        topics were in memory; `taskstream up` again resumes from Postgres.)"""
        for name, part in (("broker", self.broker), ("postgres", self.postgres)):
            if part is not None and (code := part.exit_code()) is not None:
                logger.error(
                    "the embedded %s exited with %s; stopping the stack (run taskstream up"
                    " again: tasks resume from Postgres)",
                    name,
                    code,
                )
                self.stop.set()
                return True
        return False

    def _restart_dead(self) -> bool:
        """Restart children that exited; False when one exceeded its restart budget."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is None or child.proc.poll() is None or self.stop.is_set():
                continue
            logger.error("%s exited with %s", child.name, child.proc.returncode)
            if len(child.restarts) == MAX_RESTARTS and now - child.restarts[0] < 60:
                logger.error(
                    "%s restarted %d times in a minute; stopping the stack",
                    child.name,
                    MAX_RESTARTS,
                )
                self.stop.set()
                return False
            child.restarts.append(now)
            child.start()
        return True

    def _shutdown(self) -> None:
        logger.info("stopping")
        (self.data_dir / "stack.json").unlink(missing_ok=True)  # its URLs die with the stack
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
        for child in reversed(self.children):  # all stop at once; each is told only once
            if child.proc is not None:
                wait_or_kill(child.proc, timeout=max(0.1, deadline - time.monotonic()))
        if self.postgres is not None:
            self.postgres.stop()
        if self.broker is not None:
            self.broker.stop()
        logger.info("stopped")


def up(settings: Settings) -> int:
    return Stack(settings).run()


def read_stack_file(data_dir: Path) -> dict[str, str]:
    return json.loads((data_dir / "stack.json").read_text())


#: Variables that would point `taskstream up` at outside infrastructure instead of embedded.
INFRA_VARS = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "DATABASE_URL",
    "SCHEMA_REGISTRY_URL",
    "SCHEMA_REGISTRY_BASIC_AUTH",
    "TASKSTREAM_ADMIN_TOKEN",
)


def launch(
    data_dir: Path, *, log_level: str = "WARNING", timeout: float = 150.0
) -> tuple[subprocess.Popen, dict[str, str]]:
    """Run `taskstream up` (everything embedded) as a detached process group, logging to
    `<data_dir>/up.log`, and wait until it is healthy; returns the process and its
    stack.json. For tests and benchmarks: stop it with `os.killpg(proc.pid, SIGTERM)`."""
    from taskstream.embedded import free_port

    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "stack.json").unlink(missing_ok=True)  # left by a stack that was killed
    env = {k: v for k, v in os.environ.items() if k not in INFRA_VARS}
    env.update(
        TASKSTREAM_DATA_DIR=str(data_dir),
        TASKSTREAM_API_PORT=str(free_port()),
        TASKSTREAM_LOG_LEVEL=log_level,
    )
    log_path = data_dir / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "taskstream", "up"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not (data_dir / "stack.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"taskstream up did not become healthy within {timeout:.0f}s:\n{tail}"
            )
        time.sleep(0.2)
    return proc, read_stack_file(data_dir)
