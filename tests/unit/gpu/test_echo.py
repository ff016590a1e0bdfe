"""The echo provider: its result, the failure it is asked for, and what it refuses."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest

from gpu.executors import JobCancelled, JobContext
from gpu.executors.echo import EchoFailure, echo
from streams.records import InferenceJob


def job(provider_config: object) -> InferenceJob:
    return InferenceJob(
        job_id=uuid.UUID(int=7),
        task_id=uuid.uuid4(),
        task_type="GENERATION",
        attempt=2,
        provider_type="echo",
        payload_json=json.dumps({"prompt": "p", "provider_config": provider_config}),
        enqueued_at=datetime.now(UTC),
    )


def never() -> bool:
    return False


def test_it_completes_with_a_result_named_after_the_job():
    assert echo(job(None), JobContext(never)) == {
        "executor_type": "echo",
        "service_task_id": f"echo-{uuid.UUID(int=7)}",
    }


def test_fail_true_is_a_retryable_failure_naming_the_attempt():
    with pytest.raises(EchoFailure, match="attempt 2"):
        echo(job({"fail": True}), JobContext(never))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"delay_ms": -1}, "delay_ms must be a number from 0 to 60000"),
        ({"delay_ms": 60_001}, "delay_ms must be a number from 0 to 60000"),
        ({"delay_ms": "5"}, "delay_ms must be a number from 0 to 60000"),
        ({"delay_ms": True}, "delay_ms must be a number from 0 to 60000"),
        ({"fail": "yes"}, "fail must be true or false"),
        ({"fail": 1}, "fail must be true or false"),
        ([1], "provider_config must be an object"),
    ],
)
def test_a_bad_config_is_a_validation_error_that_says_which_field(config, message):
    # ValueError: the task fails at once (VALIDATION), without retries
    with pytest.raises(ValueError, match=message):
        echo(job(config), JobContext(never))


def test_a_cancel_stops_the_wait_within_a_slice():
    stop_at = time.monotonic() + 0.1
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        echo(job({"delay_ms": 60_000}), JobContext(lambda: time.monotonic() >= stop_at))
    assert time.monotonic() - started < 1.0
