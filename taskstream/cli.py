"""The `taskstream` command. The only place that builds settings from the environment."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from typing import NoReturn

from pydantic import ValidationError

from taskstream.settings import ConfigError, Settings


def _logging(settings: Settings, role: str) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        # the pid tells apart processes of one role (`taskstream up` runs two processors)
        format=f"%(asctime)s %(levelname)-7s [{role} %(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # librdkafka's client logs are noisy at INFO; its errors still surface through callbacks.
    logging.getLogger("httpx").setLevel(logging.WARNING)


# A stopping service ends within this many seconds, drained or not. Its drains wait on the
# broker, and a SIGKILLed supervisor takes the embedded broker down with it: the orphans'
# drains would wait out every client timeout (40 s and more). `taskstream up` gives its
# children a little longer before it kills them (`stack.CHILD_STOP_TIMEOUT_S`).
SHUTDOWN_DEADLINE_S = 12.0


def _stop_on_signals(deadline_s: float = SHUTDOWN_DEADLINE_S) -> threading.Event:
    """An event that SIGINT or SIGTERM sets. However it is set (a signal, or a failed member
    stopping its process), the process exits `deadline_s` later if it is still stopping."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(
        target=_exit_late, args=(stop, deadline_s), name="shutdown-deadline", daemon=True
    ).start()
    return stop


def _exit_late(stop: threading.Event, deadline_s: float) -> None:
    stop.wait()
    time.sleep(deadline_s)  # a daemon thread: a process that stopped in time never wakes it
    logging.getLogger(__name__).error(
        "still stopping %.0fs after the stop; exiting without finishing", deadline_s
    )
    os._exit(1)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from taskstream.stack import up

    return up(settings)


# Young collections every this many net allocations (CPython's default is 700).
YOUNG_GC_THRESHOLD = 10_000


def _freeze_startup_objects() -> None:
    """Exempt everything built at start-up from garbage collection, and collect the young
    generation less often.

    A full collection otherwise walks the whole heap (faust, torch, pydantic schemas): traced
    under load, the processors paused 88-98 ms and the worker 151 ms in one. And at the
    default threshold of 700 allocations, the objects of a batch or request still in flight
    were promoted at every young collection, so the older generations filled and their
    collections paused the processors 5-20 ms (generation 1) and 50-60 ms (generation 2)
    mid-run, each one visible in the create-latency tail. At 10,000, a 10,000-task benchmark
    ran with no collection of generation 1 or 2 in any service.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, 10, 10)


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    import uvloop
    from aiohttp import web

    from api.app import ClientErrorLog, create_app

    logging.getLogger("aiohttp.server").addFilter(ClientErrorLog())
    app = create_app(settings)
    _freeze_startup_objects()
    web.run_app(
        app,
        loop=uvloop.new_event_loop(),
        host=settings.api_host,
        port=settings.api_port,
        print=None,
        shutdown_timeout=5.0,
        access_log=None,
    )
    return 0


def cmd_processors(settings: Settings, args: argparse.Namespace) -> NoReturn:
    """Run the processors until a signal or a failure, then exit without leaving their
    consumer groups (the task processor's and the stream tables'), as a killed process would.

    Nothing is lost by it: the task processor's state, offsets and outbox are in Postgres,
    the stream tables apply each delta once on a replay, and the partitions are reassigned
    once the broker expires the member (the session timeout). A graceful leave would
    reassign them sooner, but the embedded broker (tansu 0.6.0) can then wedge a group for
    good: when both members leave and rejoin within seconds (both restarted, or failing on
    the same cause), it keeps naming the departed leader, answers every SyncGroup "rebalance
    in progress", and the group never works again (no task processed, or stale counts and a
    stop that hangs). Members that vanish without a goodbye are expired and the group forms
    again (test_crash_safety).
    """
    from processors.service import create_processors

    service = create_processors(settings, leave_group=False)
    _freeze_startup_objects()
    code = 0
    try:
        service.run(_stop_on_signals())
    except Exception:  # the failed member has logged why
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: it would close the consumers, which leave


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from gpu.worker import WorkerKind, create_worker

    service = create_worker(settings, WorkerKind(args.kind))
    _freeze_startup_objects()
    service.run(_stop_on_signals())
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from state.db import Database
    from state.migrations import migrate

    with Database(settings.require_database_url()) as db:
        applied = migrate(db)
    print("applied: " + (", ".join(applied) or "nothing (up to date)"))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="taskstream", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run everything, with embedded broker and Postgres").set_defaults(
        func=cmd_up
    )
    sub.add_parser("api", help="run the HTTP API").set_defaults(func=cmd_api)
    sub.add_parser("processors", help="run the stream processors").set_defaults(func=cmd_processors)
    worker = sub.add_parser("worker", help="run a GPU worker")
    worker.add_argument("kind", choices=["inference", "training"])
    worker.set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run a command; a setting that is missing or malformed ends it with exit code 2 and
    one line saying which, not a traceback."""
    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{' or '.join(Settings.env_names_of(str(e['loc'][0])))}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        print(f"taskstream {args.command}: bad setting: {problems}", file=sys.stderr)
        return 2
    role = args.command if args.command != "worker" else f"worker-{args.kind}"
    _logging(settings, role)
    try:
        return args.func(settings, args)
    except ConfigError as exc:
        print(f"taskstream {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
