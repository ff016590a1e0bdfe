"""Executors: one callable per provider type, `executor(job, ctx) -> result fields`.

An executor raises `ValueError` for bad input (the task fails at once, category VALIDATION)
and anything else for trouble worth retrying (category TRANSIENT). It checks
`ctx.should_stop()` between steps and raises `JobCancelled` when it says so: the task is
already CANCELLED and nothing is reported. It may call `ctx.progress(percent)` as often as it
likes; the runner forwards at most about two updates a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


class JobCancelled(Exception):
    """The job's task was cancelled while it ran."""


@dataclass(frozen=True)
class JobContext:
    should_stop: Callable[[], bool]
    progress: Callable[[float], None] = lambda percent: None
