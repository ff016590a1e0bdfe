"""The `echo` provider: runs no model. It waits `provider_config.delay_ms` (default 0) and
completes with a deterministic result, or fails with a retryable error when
`provider_config.fail` is true. Smoke tests, load tests and benchmarks run on it.
"""

from __future__ import annotations

import json
import time

from gpu.executors import JobCancelled, JobContext
from streams.records import InferenceJob, TrainingJob

MAX_DELAY_MS = 60_000


class EchoFailure(RuntimeError):
    """The failure `provider_config.fail` asks for (retryable, like a crashed pipeline)."""


def echo(job: InferenceJob | TrainingJob, ctx: JobContext) -> dict:
    payload = json.loads(job.payload_json)
    config = payload.get("provider_config") or {}
    if not isinstance(config, dict):
        raise ValueError("provider_config must be an object for the echo provider")
    delay_ms, fail = config.get("delay_ms", 0), config.get("fail", False)
    is_number = isinstance(delay_ms, int | float) and not isinstance(delay_ms, bool)
    if not is_number or not 0 <= delay_ms <= MAX_DELAY_MS:
        raise ValueError(f"provider_config.delay_ms must be a number from 0 to {MAX_DELAY_MS}")
    if not isinstance(fail, bool):
        raise ValueError("provider_config.fail must be true or false")
    deadline = time.monotonic() + delay_ms / 1000
    while time.monotonic() < deadline:  # a cancel stops the wait within one 20 ms slice
        if ctx.should_stop():
            raise JobCancelled(f"task {job.task_id} was cancelled")
        time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
    if fail:
        raise EchoFailure(f"echo failure requested (attempt {job.attempt})")
    return {"executor_type": "echo", "service_task_id": f"echo-{job.job_id}"}
