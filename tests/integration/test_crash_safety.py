"""Crash safety, proven: 2,000 echo tasks (a fifth with priority, so both job lanes carry
some) while the processors and the inference worker are SIGKILLed at random moments (the
`taskstream up` supervisor restarts them). Afterwards every task is COMPLETED exactly once,
none is stuck, and the stream-table counts equal the truth."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from streams.producer import RecordProducer
from streams.records import CreateTask, TaskStatusEvent
from streams.runtime import connect_serde
from streams.topics import TASK_COMMANDS
from taskstream.stack import launch
from tests.integration.kafka_helpers import read_topic

pytestmark = pytest.mark.slow

TASKS = 2000
KILLS_PER_CHILD = 3  # the supervisor allows 5 restarts a minute per child


def _get(info: dict, path: str):
    req = urllib.request.Request(
        info["api_url"] + path, headers={"Authorization": f"Bearer {info['admin_token']}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def _children(supervisor: int) -> dict[str, psutil.Process]:
    found = {}
    for child in psutil.Process(supervisor).children():
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:  # killed a moment ago and not reaped yet by the supervisor
            continue
        for role in ("processors", "worker inference"):
            if cmd.endswith(role):
                found[role] = child
    return found


def _count(info: dict, instance: str, status: str) -> int:
    total, skip = 0, 0
    while True:
        page = _get(
            info,
            f"/api/v1/tasks/?origin_instance={instance}&status={status}&limit=1000&skip={skip}",
        )
        total += len(page)
        if len(page) < 1000:
            return total
        skip += 1000


def test_no_task_is_lost_duplicated_or_stuck_when_members_are_killed(tmp_path: Path):
    proc, info = launch(tmp_path / "data")
    try:
        instance = f"crash-{uuid.uuid4().hex[:6]}"
        rng = random.Random(20261122)

        serde, registry = connect_serde(info["schema_registry_url"], f"admin:{info['admin_token']}")
        producer = RecordProducer(info["bootstrap_servers"], serde)
        ids = []
        for i in range(TASKS):
            task_id = uuid.uuid4()
            ids.append(str(task_id))
            delay = rng.choice([0, 0, 0, 5, 20])  # some tasks are mid-flight when a kill lands
            priority = 1 if i % 5 == 0 else 0  # a fifth come by the priority lane (ADR 10)
            body = {
                "task_type": "GENERATION",
                "prompt": f"t{i}",
                "provider_type": "echo",
                "provider_config": {"delay_ms": delay},
                "origin_instance": instance,
                "priority": priority,
            }
            producer.send(
                TASK_COMMANDS,
                str(task_id),
                CreateTask(
                    command_id=uuid.uuid4(),
                    task_id=task_id,
                    issued_at=datetime.now(UTC),
                    task_type="GENERATION",
                    payload_json=json.dumps(body, sort_keys=True),
                    provider_type="echo",
                    origin_instance=instance,
                    priority=priority,
                ),
            )
        producer.flush()
        producer.close()
        registry.close()

        kills = {"processors": 0, "worker inference": 0}
        done_at_first_kill = None
        while min(kills.values()) < KILLS_PER_CHILD:
            time.sleep(rng.uniform(0.3, 2.5))
            role = rng.choice([r for r, n in kills.items() if n < KILLS_PER_CHILD])
            child = _children(proc.pid).get(role)
            if child is not None:
                child.send_signal(signal.SIGKILL)
                kills[role] += 1
                if done_at_first_kill is None:
                    done_at_first_kill = _count(info, instance, "COMPLETED")
        assert done_at_first_kill < TASKS, "the first kill must land while tasks are in flight"
        assert proc.poll() is None, "the supervisor gave up"

        deadline = time.monotonic() + 300
        while _count(info, instance, "COMPLETED") < TASKS:
            assert time.monotonic() < deadline, (
                f"stuck: {_count(info, instance, 'COMPLETED')} of {TASKS} COMPLETED, "
                f"{_count(info, instance, 'PENDING')} PENDING, {_count(info, instance, 'EXECUTING')} EXECUTING"
            )
            time.sleep(1)
        assert _count(info, instance, "COMPLETED") == TASKS, "no task appears twice"
        wanted = set(ids)
        for status in ("PENDING", "EXECUTING", "FAILED", "CANCELLED"):
            assert _count(info, instance, status) == 0, status
        # Every task's last status event on tasks.events says COMPLETED: nothing was lost on its
        # way out of the outbox (duplicates are allowed; they carry the same content).
        serde, registry = connect_serde(info["schema_registry_url"], f"admin:{info['admin_token']}")
        last: dict[str, str] = {}
        for msg in read_topic(info["bootstrap_servers"], "tasks.events", 10**7, timeout=20):
            event = serde.deserialize(msg.value())
            if isinstance(event, TaskStatusEvent) and str(event.task_id) in wanted:
                last[str(event.task_id)] = event.status.value
        registry.close()
        not_completed = {t: s for t, s in last.items() if s != "COMPLETED"}
        assert len(last) == TASKS and not not_completed, (len(last), not_completed)
        urgent = read_topic(info["bootstrap_servers"], "inference.jobs.priority", TASKS, timeout=5)
        assert len({m.key() for m in urgent}) == TASKS // 5  # the lane carried those, only those

        # The stream tables were killed with the processors too: their counts must still be exact.
        expected = {
            "total_tasks": TASKS,
            "by_status": {"COMPLETED": TASKS},
            "by_provider": {"echo": TASKS},
            "by_task_type": {"GENERATION": TASKS},
            "tasks_last_hour": TASKS,
            "tasks_last_24h": TASKS,
        }
        deadline = time.monotonic() + 120
        while (
            stats := _get(info, f"/api/v1/monitoring/stats?origin_instance={instance}")
        ) != expected:
            assert time.monotonic() < deadline, stats
            time.sleep(1)
        for task_id in rng.sample(ids, 50):
            task = _get(info, f"/api/v1/tasks/{task_id}")
            assert (
                task["status"] == "COMPLETED"
                and task["retry_count"] == 0
                and task["progress"] == 100.0
            )
            assert task["started_at"] <= task["completed_at"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def _processors(supervisor: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(supervisor).children():
        try:
            if child.cmdline()[-1:] == ["processors"]:
                found.append(child)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_processors_stopped_in_quick_succession_form_their_group_again(tmp_path, signum):
    """Both processors members killed, or stopped, three times within seconds, as a crash
    loop or a hasty restart does: the group must assign its partitions again and work
    resume. Members that left the group gracefully this quickly wedged the embedded broker's
    group for good (a tansu 0.6.0 fault, see `taskstream.cli.cmd_processors`): after a
    SIGTERM the stack never became healthy again, so the processors now stop without
    leaving, as a killed process does."""
    proc, info = launch(tmp_path / "data")
    try:
        for _ in range(3):
            for child in _processors(proc.pid):
                child.send_signal(signum)
            time.sleep(1.5)  # back up: the supervisor restarts a member after ~1 s
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(info["api_url"] + "/health", timeout=10) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        break
            except urllib.error.HTTPError as exc:
                health = json.loads(exc.read())
            assert time.monotonic() < deadline, f"never healthy again: {health}"
            time.sleep(1)
        body = json.dumps(
            {"task_type": "GENERATION", "prompt": "p", "provider_type": "echo"}
        ).encode()
        req = urllib.request.Request(
            info["api_url"] + "/api/v1/tasks/",
            data=body,
            headers={
                "Authorization": f"Bearer {info['admin_token']}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
            # 202 while the member that will own its partition is still joining
            task_id = json.loads(resp.read())["task_id" if resp.status == 202 else "id"]
        deadline, status = time.monotonic() + 60, None
        while status != "COMPLETED":
            assert time.monotonic() < deadline, f"task {task_id} still {status}"
            time.sleep(0.5)
            try:
                status = _get(info, f"/api/v1/tasks/{task_id}")["status"]
            except urllib.error.HTTPError as exc:  # 404 until its create is applied
                assert exc.code == 404, exc
        assert proc.poll() is None, "the supervisor gave up"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
