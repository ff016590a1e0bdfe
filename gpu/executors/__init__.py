"""Executors: one callable per provider type, `executor(job, should_stop) -> result fields`.

An executor raises `ValueError` for bad input (the task fails at once, category VALIDATION)
and anything else for trouble worth retrying (category TRANSIENT). It checks `should_stop()`
between steps and raises `JobCancelled` when it says so: the task is already CANCELLED and
nothing is reported.
"""


class JobCancelled(Exception):
    """The job's task was cancelled while it ran."""
