"""Executors: one callable per provider type, `executor(job, ctx) -> result fields`.

An executor raises `ValueError` for bad input (the task fails at once, category VALIDATION)
and anything else for trouble worth retrying (category TRANSIENT). It checks
`ctx.should_stop()` between steps and raises `JobCancelled` when it says so: the task is
already CANCELLED and nothing is reported. It may call `ctx.progress(percent)` (or `ctx.status`,
with details) as often as it likes; the runner forwards at most about two updates a second,
and every milestone.
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
    #: Progress with details the task shows while it runs (a training's step, ETA, stage):
    #: `status(percent, details, milestone)`. Milestones (a new stage, a checkpoint) are
    #: always sent; other updates are throttled like `progress`.
    status: Callable[[float, dict, bool], None] = lambda percent, details, milestone: None
