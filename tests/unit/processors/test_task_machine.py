"""The task state machine, without infrastructure."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from processors.task_machine import (
    MAX_RETRIES,
    Malformed,
    TaskState,
    check_report,
    handle,
    job_id,
    job_topic,
)
from streams.queues import Queues
from streams.records import (
    TASK_BODY_MAX_BYTES,
    CancelTask,
    CleanupTask,
    CommandOutcomeKind,
    CreateTask,
    DeleteTask,
    ErrorCategory,
    InferenceJob,
    InferenceStatusEvent,
    JobCancelled,
    RetryTask,
    TaskCreatedEvent,
    TaskDeleted,
    TaskStatus,
    TaskStatusEvent,
    TaskUpdated,
    UpdateTask,
    WorkerReport,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TASK = uuid.uuid4()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def create(payload: dict | None = None, **kw) -> CreateTask:
    values = dict(
        command_id=uuid.uuid4(),
        task_id=TASK,
        issued_at=T0,
        task_type="GENERATION",
        payload_json=json.dumps(payload or {"prompt": "a red circle"}, sort_keys=True),
        tenant="acme",
    )
    return CreateTask(**{**values, **kw})


def command(kind, **kw):
    return kind(command_id=uuid.uuid4(), task_id=TASK, issued_at=T0, **kw)


def report(state: TaskState, status: TaskStatus, **kw) -> WorkerReport:
    values = dict(
        report_id=uuid.uuid4(),
        job_id=job_id(TASK, state.attempt),
        task_id=TASK,
        worker_id="w",
        attempt=state.attempt,
        status=status,
        timestamp=at(1),
    )
    return WorkerReport(**{**values, **kw})


@pytest.fixture
def pending() -> TaskState:
    return handle(None, create(), T0).state


def test_create_emits_created_event_job_and_applied_outcome():
    cmd = create(priority=5, provider_type="echo")
    d = handle(None, cmd, T0)
    assert (
        d.state.status == TaskStatus.PENDING and d.state.version == 1 and d.state.tenant == "acme"
    )
    [created] = d.events
    assert isinstance(created, TaskCreatedEvent) and created.status == "PENDING"
    [job] = d.jobs
    assert isinstance(job, InferenceJob)
    assert (job.job_id, job.attempt, job.provider_type, job.priority) == (
        job_id(TASK, 1),
        1,
        "echo",
        5,
    )
    # the queue the task was routed to is part of its fields (the job's body)
    assert json.loads(job.payload_json) == {"prompt": "a red circle", "queue_name": "inference"}
    assert d.outcome.outcome == CommandOutcomeKind.APPLIED and d.outcome.version == 1


@pytest.mark.parametrize(
    ("priority", "topic"),
    [(5, "inference.jobs.priority"), (1, "inference.jobs.priority"), (0, "inference.jobs")]
    + [(-3, "inference.jobs")],
)
def test_a_job_of_a_task_with_priority_goes_to_the_priority_lane(priority, topic):
    [job] = handle(None, create(priority=priority), T0).jobs
    assert job_topic(job).name == topic


HIRES = Queues(frozenset({"hires", "external"}), {"fal": "external"})


@pytest.mark.parametrize(
    ("body", "provider", "priority", "queue", "topic"),
    [
        ({"queue_name": "hires"}, None, 0, "hires", "inference.hires.jobs"),
        ({"queue_name": "hires"}, None, 2, "hires", "inference.hires.jobs.priority"),
        ({}, "fal", 0, "external", "inference.external.jobs"),  # derived from the provider
        ({"queue_name": "hires"}, "fal", 0, "hires", "inference.hires.jobs"),  # named wins
        ({}, "echo", 0, "inference", "inference.jobs"),
        ({"queue_name": "inference"}, None, 0, "inference", "inference.jobs"),
    ],
)
def test_a_task_runs_on_the_queue_it_names_else_its_providers(
    body, provider, priority, queue, topic
):
    cmd = create({"prompt": "p", **body}, provider_type=provider, priority=priority)
    d = handle(None, cmd, T0, HIRES)
    [job] = d.jobs
    assert (job.queue, job_topic(job, HIRES).name) == (queue, topic)
    assert d.state.fields["queue_name"] == queue
    # a retry of the task runs on the same queue
    failed = handle(d.state, command(CancelTask), at(1), HIRES).state
    [again] = handle(failed, command(RetryTask), at(2), HIRES).jobs
    assert job_topic(again, HIRES).name == topic


def test_a_training_task_runs_on_its_kinds_topic_of_the_queue():
    cmd = create({"trigger_word": "sks", "steps": 3}, task_type="TRAINING")
    [job] = handle(None, cmd, T0, HIRES).jobs
    assert (job.queue, job_topic(job, HIRES).name) == ("training", "training.jobs")


@pytest.mark.parametrize(
    ("queue_name", "reason"),
    [
        ("gpu-xl", "unknown queue 'gpu-xl'; known inference queues: 'inference', 'external',"),
        ("training", "queue 'training' takes training work, not inference"),
    ],
)
def test_a_task_naming_a_queue_that_is_not_declared_is_refused(queue_name, reason):
    d = handle(None, create({"prompt": "p", "queue_name": queue_name}), T0, HIRES)
    assert d.state is None and d.jobs == ()
    assert d.outcome.outcome == CommandOutcomeKind.REJECTED and d.outcome.status_code == 422
    assert d.outcome.reason.startswith("queue_name: " + reason), d.outcome.reason


def test_an_update_moves_the_next_attempt_to_another_declared_queue():
    state = handle(None, create(), T0, HIRES).state
    d = handle(state, command(UpdateTask, changes_json='{"queue_name": "hires"}'), at(1), HIRES)
    assert d.outcome.outcome == CommandOutcomeKind.APPLIED and d.jobs == ()
    assert d.state.fields["queue_name"] == "hires"
    cancelled = handle(d.state, command(CancelTask), at(2), HIRES).state
    [job] = handle(cancelled, command(RetryTask), at(3), HIRES).jobs
    assert job_topic(job, HIRES).name == "inference.hires.jobs"
    for bad in ('{"queue_name": "nowhere"}', '{"queue_name": 7}'):
        refused = handle(d.state, command(UpdateTask, changes_json=bad), at(4), HIRES)
        assert refused.outcome.status_code == 422 and refused.state == d.state


def test_a_job_of_a_queue_no_longer_declared_goes_to_the_default_queue():
    [job] = handle(None, create({"prompt": "p", "queue_name": "hires"}), T0, HIRES).jobs
    assert job_topic(job, HIRES).name == "inference.hires.jobs"
    assert job_topic(job, Queues()).name == "inference.jobs"


def test_full_lifecycle_to_completed(pending):
    d = handle(pending, report(pending, TaskStatus.EXECUTING, progress=10.0), at(1))
    assert d.state.status == TaskStatus.EXECUTING and d.state.started_at == at(1)
    [event] = d.events
    assert (
        isinstance(event, TaskStatusEvent) and event.progress == 10.0 and event.started_at == at(1)
    )
    d = handle(
        d.state,
        report(d.state, TaskStatus.COMPLETED, result_json='{"result_image_path": "g/x.png"}'),
        at(2),
    )
    assert d.state.status == TaskStatus.COMPLETED and d.state.progress == 100.0
    assert d.state.completed_at == at(2) and d.state.fields["result_image_path"] == "g/x.png"
    assert d.events[0].status == TaskStatus.COMPLETED and d.events[0].completed_at == at(2)
    assert d.state.version == 3
    result = d.events[1]  # F45: the inference result follows the status event
    assert isinstance(result, InferenceStatusEvent) and result.status == "COMPLETED"
    assert (result.result_image_path, result.completed_at) == ("g/x.png", at(2))
    assert result.backend_generation_id == pending.task_id
    assert result.backend_prediction_id == job_id(pending.task_id, 1)


def test_unchanged_progress_emits_nothing(pending):
    running = handle(pending, report(pending, TaskStatus.EXECUTING, progress=50.0), at(1)).state
    d = handle(running, report(running, TaskStatus.EXECUTING, progress=50.0), at(2))
    assert d.events == () and d.state == running


def test_cancel_pending_or_running_but_not_finished(pending):
    d = handle(pending, command(CancelTask, tenant="acme"), at(1))
    assert d.state.status == TaskStatus.CANCELLED and d.state.completed_at == at(1)
    assert d.events[0].status == TaskStatus.CANCELLED
    again = handle(d.state, command(CancelTask), at(2))
    assert again.outcome.outcome == CommandOutcomeKind.REJECTED and again.outcome.status_code == 409
    assert "cannot cancel a CANCELLED task" in again.outcome.reason
    assert again.state == d.state and again.events == ()


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        (CancelTask, None),
        (UpdateTask, '{"status": "CANCELLED"}'),
        (UpdateTask, '{"status": "COMPLETED"}'),
        (UpdateTask, '{"status": "FAILED"}'),
    ],
)
def test_a_command_that_ends_an_attempt_stops_its_job(pending, kind, changes):
    running = handle(pending, report(pending, TaskStatus.EXECUTING), at(1)).state
    extra = {"changes_json": changes} if changes else {}
    d = handle(running, command(kind, **extra), at(2))
    assert d.jobs == (JobCancelled(job_id=job_id(TASK, 1), task_id=TASK, cancelled_at=at(2)),)


def test_commands_that_leave_the_attempt_running_stop_nothing(pending):
    d = handle(pending, command(UpdateTask, changes_json='{"priority": 3}'), at(1))
    assert d.state.status == TaskStatus.PENDING and d.jobs == ()
    done = handle(pending, report(pending, TaskStatus.COMPLETED, result_json="{}"), at(1)).state
    assert handle(done, command(CleanupTask), at(2)).jobs == ()
    # a worker's own failure ends its job already
    failed = handle(pending, report(pending, TaskStatus.FAILED, retryable=True), at(1))
    assert [type(j) for j in failed.jobs] == [InferenceJob]


@pytest.mark.parametrize("start", [TaskStatus.CANCELLED, TaskStatus.FAILED])
def test_an_update_back_to_pending_is_a_retry(pending, start):
    """PUT {"status": "PENDING"} on a finished task starts a fresh attempt, as RetryTask
    does: the last attempt's times, progress and error are gone, and it counts."""
    running = handle(pending, report(pending, TaskStatus.EXECUTING, progress=40.0), at(1)).state
    if start == TaskStatus.CANCELLED:
        ended = handle(running, command(CancelTask), at(2)).state
    else:
        ended = handle(running, report(running, TaskStatus.FAILED, error_message="x"), at(2)).state
    d = handle(ended, command(UpdateTask, changes_json='{"status": "PENDING"}'), at(3))
    state = d.state
    assert (state.status, state.retry_count, state.attempt) == (TaskStatus.PENDING, 1, 2)
    assert (state.started_at, state.completed_at, state.progress) == (None, None, 0.0)
    assert state.error_message is None and state.error_category is None
    assert [(type(j), j.job_id) for j in d.jobs] == [(InferenceJob, job_id(TASK, 2))]
    assert d.events[-1].status == TaskStatus.PENDING and d.events[-1].completed_at is None


def test_requeueing_a_running_task_stops_its_job_and_dispatches_the_next(pending):
    running = handle(pending, report(pending, TaskStatus.EXECUTING), at(1)).state
    d = handle(running, command(UpdateTask, changes_json='{"status": "PENDING"}'), at(2))
    assert [(type(j), j.job_id) for j in d.jobs] == [
        (JobCancelled, job_id(TASK, 1)),
        (InferenceJob, job_id(TASK, 2)),
    ]


def test_a_report_after_cancel_is_dropped(pending):
    running = handle(pending, report(pending, TaskStatus.EXECUTING), at(1)).state
    cancelled = handle(running, command(CancelTask), at(2)).state
    late = handle(cancelled, report(running, TaskStatus.COMPLETED, result_json="{}"), at(3))
    assert late.state == cancelled and late.events == () and late.outcome is None


def test_reports_of_stale_attempts_and_unknown_tasks_are_dropped(pending):
    stale = report(pending, TaskStatus.COMPLETED, attempt=7)
    assert handle(pending, stale, at(1)).state == pending
    assert handle(None, report(pending, TaskStatus.EXECUTING), at(1)).state is None


def test_retryable_failures_retry_then_fall_back_then_fail():
    state = handle(
        None, create({"prompt": "p", "fallback_provider_type": "echo-b"}, provider_type="echo"), T0
    ).state
    for attempt in range(1, MAX_RETRIES + 1):
        d = handle(
            state,
            report(state, TaskStatus.FAILED, retryable=True, error_message="oom"),
            at(attempt),
        )
        state = d.state
        assert state.status == TaskStatus.PENDING and state.retry_count == attempt
        assert d.jobs[0].attempt == attempt + 1 and d.jobs[0].provider_type == "echo"
    d = handle(state, report(state, TaskStatus.FAILED, retryable=True, error_message="oom"), at(9))
    state = d.state
    assert state.on_fallback and d.jobs[0].provider_type == "echo-b"
    d = handle(
        state,
        report(
            state,
            TaskStatus.FAILED,
            retryable=True,
            error_message="still oom",
            error_category=ErrorCategory.RESOURCE_EXHAUSTED,
        ),
        at(10),
    )
    assert d.state.status == TaskStatus.FAILED and d.jobs == ()
    assert (d.state.error_message, d.state.error_category) == (
        "still oom",
        ErrorCategory.RESOURCE_EXHAUSTED,
    )
    assert d.events[0].error_category == ErrorCategory.RESOURCE_EXHAUSTED


def test_a_validation_failure_is_not_retried(pending):
    d = handle(
        pending,
        report(
            pending,
            TaskStatus.FAILED,
            retryable=False,
            error_message="bad size",
            error_category=ErrorCategory.VALIDATION,
        ),
        at(1),
    )
    assert d.state.status == TaskStatus.FAILED and d.state.retry_count == 0 and d.jobs == ()
    [_, result] = d.events
    assert isinstance(result, InferenceStatusEvent)
    assert (result.status, result.error_message, result.result_image_path) == (
        "FAILED",
        "bad size",
        None,
    )


def test_retry_command_requeues_failed_tasks_only(pending):
    failed = handle(pending, report(pending, TaskStatus.FAILED, error_message="x"), at(1)).state
    d = handle(failed, command(RetryTask), at(2))
    assert d.state.status == TaskStatus.PENDING and d.state.retry_count == 1
    assert d.state.error_message is None and d.jobs[0].attempt == 2
    refused = handle(d.state, command(RetryTask), at(3))
    assert (
        refused.outcome.status_code == 409 and "only FAILED or CANCELLED" in refused.outcome.reason
    )


def test_update_sets_fields_and_validates_status_moves(pending):
    d = handle(
        pending, command(UpdateTask, changes_json='{"priority": 9, "executor_type": "gpu"}'), at(1)
    )
    assert d.state.priority == 9 and d.state.fields["executor_type"] == "gpu"
    assert isinstance(d.events[0], TaskUpdated) and d.events[0].version == d.state.version
    done = handle(d.state, command(UpdateTask, changes_json='{"status": "EXECUTING"}'), at(2)).state
    done = handle(done, command(UpdateTask, changes_json='{"status": "COMPLETED"}'), at(3)).state
    refused = handle(done, command(UpdateTask, changes_json='{"status": "PENDING"}'), at(4))
    assert refused.outcome.status_code == 409
    assert refused.outcome.reason == "cannot move a task from COMPLETED to PENDING"


def test_bodies_over_the_limit_are_refused_with_413_and_change_nothing(pending):
    # A job carries the body ASCII-escaped: 200,000 "é" are 400 KB of UTF-8 but 1.2 MB there.
    for payload in (
        {"prompt": "p", "config": {"k": "x" * TASK_BODY_MAX_BYTES}},
        {"prompt": "p", "config": {"k": "é" * 200_000}},
    ):
        d = handle(None, create(payload), T0)
        assert d.state is None and d.events == () and d.jobs == ()
        assert d.outcome.outcome == CommandOutcomeKind.REJECTED and d.outcome.status_code == 413
        assert f"over the limit of {TASK_BODY_MAX_BYTES}" in d.outcome.reason
    half = "x" * (TASK_BODY_MAX_BYTES // 2)
    big = handle(
        pending, command(UpdateTask, changes_json=json.dumps({"config": {"k": half}})), at(1)
    )
    assert big.outcome.outcome == CommandOutcomeKind.APPLIED, "under the limit: applied"
    # each update alone is under the limit; the task they would make is not
    over = command(UpdateTask, changes_json=json.dumps({"errors": [half]}))
    refused = handle(big.state, over, at(2))
    assert refused.outcome.status_code == 413 and refused.state == big.state
    assert refused.events == () and refused.jobs == ()
    # a field replaced by a smaller value is fine, as are column-only updates
    assert (
        handle(big.state, command(UpdateTask, changes_json='{"config": {}}'), at(2)).state.fields[
            "config"
        ]
        == {}
    )
    assert (
        handle(big.state, command(UpdateTask, changes_json='{"priority": 3}'), at(2)).state.priority
        == 3
    )


def test_a_body_grown_by_worker_reports_starts_no_attempt_its_job_could_not_carry(pending):
    # each report fits Kafka, but EXECUTING details add up in the task's fields
    grown = pending
    for i, key in enumerate(("logs", "notes")):
        details = json.dumps({key: "x" * (TASK_BODY_MAX_BYTES // 2)})
        grown = handle(grown, report(grown, TaskStatus.EXECUTING, result_json=details), at(i)).state
    failing = report(grown, TaskStatus.FAILED, retryable=True, error_message="GPU lost")
    failed = handle(grown, failing, at(3))
    assert failed.state.status == TaskStatus.FAILED and failed.jobs == (), "not retried"
    assert failed.state.error_message.startswith("GPU lost; not retried: the task's body is")
    for cmd in (command(RetryTask), command(UpdateTask, changes_json='{"status": "PENDING"}')):
        refused = handle(failed.state, cmd, at(4))
        assert refused.outcome.status_code == 413 and refused.jobs == ()
        assert refused.state == failed.state
    # a body that fits is retried as before
    small = handle(pending, report(pending, TaskStatus.FAILED, retryable=True), at(1))
    assert small.state.status == TaskStatus.PENDING and len(small.jobs) == 1


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"payload_json": "nope"}, "payload_json is not valid JSON: Expecting value"),
        ({"payload_json": "[1, 2]"}, "payload_json must be a JSON object, not list"),
        ({"task_type": "FOO"}, "unknown task_type 'FOO'; expected one of BACKGROUND_FIX, "),
        ({"payload_json": '{"width": 64}'}, "GENERATION.prompt: Field required"),
        (
            {"payload_json": '{"prompt": "p", "colour": 1}'},
            "colour: Extra inputs are not permitted",
        ),
        ({"payload_json": '{"prompt": "a\\u0000b"}'}, "payload_json contains a NUL character"),
        ({"origin_instance": "a\x00b"}, "origin_instance contains a NUL character"),
        # Python's parser reads these; stored, they would come back as null
        ({"payload_json": '{"prompt": "p", "config": {"a": NaN}}'}, "NaN and Infinity are not"),
        ({"payload_json": '{"prompt": "p", "config": {"a": [1e400]}}'}, "NaN and Infinity"),
        ({"payload_json": '{"prompt": "p", "subject_lora_weight": NaN}'}, "NaN and Infinity"),
    ],
)
def test_malformed_creates_are_refused_with_422_and_the_reason(kw, reason):
    d = handle(None, create(**kw), T0)
    assert d.state is None and d.events == () and d.jobs == ()
    assert d.outcome.outcome == CommandOutcomeKind.REJECTED and d.outcome.status_code == 422
    assert reason in d.outcome.reason


def test_a_nul_escape_that_is_only_text_is_fine():
    d = handle(None, create({"prompt": "a \\u0000 in a path"}), T0)  # backslash, then u0000
    assert d.outcome.outcome == CommandOutcomeKind.APPLIED
    assert d.state.fields["prompt"] == "a \\u0000 in a path"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ("[]", "changes_json must be a JSON object, not list"),
        ('{"priority": "high"}', "priority must be a 32-bit integer, not 'high'"),
        ('{"priority": true}', "priority must be a 32-bit integer, not True"),
        ('{"progress": 150}', "progress must be a number from 0 to 100, not 150"),
        ('{"retry_count": -1}', "retry_count must be a non-negative integer, not -1"),
        ('{"status": "DONE"}', "status must be one of UNKNOWN, PENDING, EXECUTING, "),
        ('{"errors": ["\\u0000"]}', "changes_json contains a NUL character"),
        ('{"config": {"a": -Infinity}}', "changes_json: NaN and Infinity are not JSON numbers"),
        ('{"priority": 2147483648}', "priority must be a 32-bit integer, not 2147483648"),
        ('{"origin_tenant_id": "umbrella"}', "origin_tenant_id cannot move a task to another"),
        ('{"origin_tenant_id": null}', "origin_tenant_id cannot move a task to another"),
    ],
)
def test_malformed_updates_are_refused_with_422_and_change_nothing(pending, changes, reason):
    d = handle(pending, command(UpdateTask, changes_json=changes), at(1))
    assert d.state == pending and d.events == () and d.jobs == ()
    assert d.outcome.status_code == 422 and reason in d.outcome.reason


def test_an_update_may_restate_the_tenant(pending):
    d = handle(pending, command(UpdateTask, changes_json='{"origin_tenant_id": "acme"}'), at(1))
    assert d.outcome.outcome == CommandOutcomeKind.APPLIED and d.state.tenant == "acme"
    assert d.state.fields == pending.fields and d.events == ()


def test_malformed_reports_are_caught_before_they_are_applied(pending):
    check_report(report(pending, TaskStatus.COMPLETED, result_json='{"a": 1}'))
    for bad, reason in (
        ({"result_json": "[1]"}, "result_json must be a JSON object, not list"),
        ({"result_json": "{"}, "result_json is not valid JSON"),
        ({"result_json": '{"score": NaN}'}, "result_json: NaN and Infinity are not JSON"),
        ({"error_message": "boom\x00"}, "error_message contains a NUL character"),
        ({"progress": float("nan")}, "progress must be a number from 0 to 100, not nan"),
        ({"progress": 101.0}, "progress must be a number from 0 to 100, not 101.0"),
    ):
        with pytest.raises(Malformed, match=re.escape(reason)):
            check_report(report(pending, TaskStatus.FAILED, **bad))


def test_delete_removes_and_cleanup_marks(pending):
    done = handle(pending, report(pending, TaskStatus.COMPLETED, result_json="{}"), at(1)).state
    d = handle(done, command(DeleteTask), at(2))
    assert d.state is None and [type(e) for e in d.events] == [TaskDeleted] and d.events[0].hard
    assert d.outcome.version == done.version + 1
    d = handle(done, command(CleanupTask), at(2))
    assert d.state.is_deleted and d.state.deleted_at == at(2) and not d.events[0].hard
    assert d.state.status == TaskStatus.COMPLETED
    assert handle(d.state, command(CleanupTask), at(3)).events == (), "cleanup twice is a no-op"


def test_a_cleaned_up_task_is_kept_as_it_was_and_never_runs_again(pending):
    cancelled = handle(pending, command(CancelTask), at(1)).state
    cleaned = handle(cancelled, command(CleanupTask), at(2)).state
    for cmd in (
        command(RetryTask),
        command(UpdateTask, changes_json='{"status": "PENDING"}'),
        command(UpdateTask, changes_json='{"priority": 3}'),
    ):
        d = handle(cleaned, cmd, at(3))
        assert d.state == cleaned and d.events == () and d.jobs == ()
        assert d.outcome.status_code == 409 and "was cleaned up" in d.outcome.reason
    assert handle(cleaned, command(DeleteTask), at(3)).state is None, "it can still be deleted"


@pytest.mark.parametrize("kind", [DeleteTask, CleanupTask])
def test_deleting_a_running_task_cancels_it_first_so_its_worker_stops(pending, kind):
    running = handle(pending, report(pending, TaskStatus.EXECUTING), at(1)).state
    d = handle(running, command(kind), at(2))
    cancelled, gone = d.events
    assert isinstance(cancelled, TaskStatusEvent) and cancelled.status == TaskStatus.CANCELLED
    assert isinstance(gone, TaskDeleted) and gone.version == running.version + 2
    assert d.outcome.outcome == CommandOutcomeKind.APPLIED
    # what the workers' cancellation watch follows: the running attempt's job
    assert d.jobs == (JobCancelled(job_id=job_id(TASK, 1), task_id=TASK, cancelled_at=at(2)),)
    if kind is CleanupTask:
        assert d.state.status == TaskStatus.CANCELLED and d.state.is_deleted
    # its worker's last report changes nothing
    late = report(running, TaskStatus.COMPLETED, result_json='{"result_image_path": "x.png"}')
    assert handle(d.state, late, at(3)).state == d.state


def test_unknown_tasks_and_other_tenants_get_404(pending):
    assert handle(None, command(CancelTask), T0).outcome.status_code == 404
    other = handle(pending, command(CancelTask, tenant="globex"), T0)
    assert other.outcome.status_code == 404 and other.state == pending
    assert (
        handle(pending, command(CancelTask, tenant=None), T0).outcome.outcome
        == CommandOutcomeKind.APPLIED
    )


def test_idempotent_create_returns_the_original_and_refuses_a_different_body():
    first = create(idempotency_key="k")
    state = handle(None, first, T0).state
    same = handle(state, create(idempotency_key="k"), at(1))
    assert (
        same.outcome.outcome == CommandOutcomeKind.APPLIED and same.events == () and same.jobs == ()
    )
    other = handle(state, create({"prompt": "else"}, idempotency_key="k"), at(1))
    assert other.outcome.status_code == 409 and "different body" in other.outcome.reason
    assert handle(state, create(), at(1)).outcome.status_code == 409


def test_replayed_messages_produce_the_same_ids():
    cmd = create()
    assert handle(None, cmd, T0).jobs[0].job_id == handle(None, cmd, at(5)).jobs[0].job_id


def test_a_training_task_goes_to_the_training_jobs_and_reports_its_phases():
    from streams.records import PreprocessingStatusEvent, TrainingJob, TrainingStatusEvent

    d = handle(None, create({"trigger_word": "sks", "steps": 3}, task_type="TRAINING"), T0)
    [job] = d.jobs
    assert isinstance(job, TrainingJob) and json.loads(job.payload_json)["trigger_word"] == "sks"
    state = d.state

    def step(details: dict, progress: float, t: float):
        nonlocal state
        d = handle(
            state,
            report(state, TaskStatus.EXECUTING, progress=progress, result_json=json.dumps(details)),
            at(t),
        )
        state = d.state
        return d.events

    pre = {"phase": "PREPROCESSING", "preprocessing_stage": "downloading"}
    status, preprocessing = step({**pre, "processed_files_count": 1, "total_files_count": 2}, 2, 1)
    assert isinstance(status, TaskStatusEvent) and isinstance(
        preprocessing, PreprocessingStatusEvent
    )
    assert (preprocessing.status, preprocessing.current_stage) == ("PREPROCESSING", "downloading")
    assert (preprocessing.processed_files_count, preprocessing.total_files_count) == (1, 2)
    # the same progress with new details is still news (a new stage at the same percent)
    _, again = step({**pre, "preprocessing_stage": "validating"}, 2, 1.5)
    assert again.current_stage == "validating"
    switch = {"phase": "TRAINING", "current_step": 0, "total_steps": 3}
    _, done_pre, first = step(
        {
            **switch,
            "processed_dataset_path": "trainings/x/dataset",
            "preprocessing_completed_at": "t",
        },
        5,
        2,
    )
    assert (done_pre.status, done_pre.processed_dataset_path) == (
        "COMPLETED",
        "trainings/x/dataset",
    )
    assert isinstance(first, TrainingStatusEvent) and (first.status, first.current_step) == (
        "TRAINING",
        0,
    )
    _, training = step({"phase": "TRAINING", "current_step": 2, "eta_seconds": 4}, 60, 3)
    assert (training.current_step, training.total_steps, training.eta_seconds) == (2, 3, 4)
    assert state.fields["current_step"] == 2 and state.fields["trigger_word"] == "sks"
    d = handle(
        state,
        report(
            state,
            TaskStatus.COMPLETED,
            result_json='{"local_model_path": "trainings/x.safetensors"}',
        ),
        at(4),
    )
    final = d.events[-1]
    assert isinstance(final, TrainingStatusEvent) and final.status == "COMPLETED"
    assert final.local_model_path == "trainings/x.safetensors" and final.completed_at == at(4)


def test_a_training_failing_in_preprocessing_says_so():
    from streams.records import PreprocessingStatusEvent

    state = handle(None, create({"trigger_word": "sks"}, task_type="TRAINING"), T0).state
    d = handle(
        state,
        report(
            state,
            TaskStatus.FAILED,
            error_message="source_images[0]: not a decodable image",
            error_category=ErrorCategory.VALIDATION,
        ),
        at(1),
    )
    failed = d.events[-1]
    assert isinstance(failed, PreprocessingStatusEvent) and failed.status == "FAILED"
    assert failed.error_message == "source_images[0]: not a decodable image"
