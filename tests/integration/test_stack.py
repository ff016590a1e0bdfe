"""`taskstream up` as a user runs it: embedded everything, healthy, stack.json, and no
process left behind after SIGTERM, or even after the supervisor is SIGKILLed."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from PIL import Image

from gpu.base_model.quality import judge
from taskstream.stack import launch

pytestmark = pytest.mark.slow


def _get(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


@pytest.fixture
def stack(tmp_path: Path):
    started = time.monotonic()
    proc, info = launch(tmp_path / "data", log_level="INFO")
    stack_file = tmp_path / "data" / "stack.json"
    print(f"taskstream up healthy after {time.monotonic() - started:.1f}s")  # shown with -s
    family = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
    yield proc, info, family, stack_file
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


def _call(info: dict, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(
        info["api_url"] + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={
            "Authorization": f"Bearer {info['admin_token']}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
        return resp.status, resp.read()


def _wait_for(info: dict, task_id: str, statuses: tuple[str, ...], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while (task := json.loads(_call(info, "GET", f"/api/v1/tasks/{task_id}")[1]))[
        "status"
    ] not in statuses:
        assert time.monotonic() < deadline, task
        time.sleep(0.2)
    return task


def _generate(info: dict, fields: dict) -> bytes:
    """POST a GENERATION task, wait for COMPLETED, return its PNG from the storage API."""
    _, body = _call(info, "POST", "/api/v1/tasks/", {"task_type": "GENERATION", **fields})
    task = _wait_for(info, json.loads(body)["id"], ("COMPLETED", "FAILED"), 60)
    assert task["status"] == "COMPLETED", task
    return _call(info, "GET", f"/api/v1/storage/images/{task['result_image_path']}")[1]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # it may exit between any two looks at it
        return False


def _all_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def test_up_is_healthy_writes_stack_json_and_stops_cleanly_on_sigterm(stack):
    proc, info, family, stack_file = stack
    assert set(info) == {"api_url", "bootstrap_servers", "schema_registry_url", "admin_token"}
    assert oct(stack_file.stat().st_mode & 0o777) == "0o600", "stack.json holds the admin token"
    assert _get(info["api_url"] + "/health") == 200
    assert _get(info["schema_registry_url"] + "/subjects") == 401
    assert _get(info["schema_registry_url"] + "/subjects", info["admin_token"]) == 200
    names = {psutil.Process(p).name() for p in family if _alive(p)}
    assert any(n.startswith("tansu") for n in names) and "postgres" in names, names
    assert len(family) >= 7, "supervisor, broker, postgres, api, processors and two workers"
    # a fresh data dir draws real pictures with the built-in model, at any requested size
    png = _generate(
        info,
        {
            "prompt": "a blue square on a yellow background",
            "width": 256,
            "height": 256,
            "seed": 2,
            "config": {"num_inference_steps": 20, "guidance_scale": 4.0},
        },
    )
    image = Image.open(io.BytesIO(png))
    assert image.size == (256, 256)
    verdict = judge(image)
    assert (verdict.colour, verdict.shape, verdict.background) == ("blue", "square", "yellow")

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert time.monotonic() - started < 30
    assert _all_gone(family, 5) == []
    # each service stopped gracefully: one SIGTERM each, no error or traceback on the way out
    log = (stack_file.parent / "up.log").read_text(errors="replace")
    stopping = log[log.index("taskstream.stack: stopping") :]
    assert "Traceback" not in stopping and " ERROR " not in stopping, stopping[-3000:]


def test_a_killed_supervisor_leaves_nothing_running(stack):
    proc, _, family, _ = stack
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel's parent-death signal must
    proc.wait(10)
    assert _all_gone(family, 30) == []


@pytest.mark.parametrize("part", ["postgres", "tansu"])
def test_the_stack_stops_with_an_error_when_its_broker_or_postgres_dies(stack, part):
    """Nothing works without them: the stack used to stay up, answering 503, for good."""
    proc, _, family, stack_file = stack
    [infra] = [
        p
        for p in family
        if _alive(p)
        and psutil.Process(p).name().startswith(part)
        and psutil.Process(p).parent().pid == proc.pid
    ]
    os.kill(infra, signal.SIGKILL)
    assert proc.wait(60) == 1
    assert _all_gone(family, 30) == []
    log = (stack_file.parent / "up.log").read_text(errors="replace")
    name = "broker" if part == "tansu" else part
    assert f"the embedded {name} exited with -9; stopping the stack" in log


def _stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


def test_a_restarted_stack_keeps_its_tasks_counts_and_running_work(tmp_path: Path):
    """The embedded broker starts empty on every `up` while Postgres keeps the tasks: the
    restarted stack must not seek the fresh topics to the old broker's offsets (its first
    creates were never applied, and answered 202), must count the tasks it already had, and
    must run again the job that was running when it stopped."""
    echo = {"task_type": "GENERATION", "prompt": "p", "provider_type": "echo"}
    proc, info = launch(tmp_path / "data")
    try:
        done = [json.loads(_call(info, "POST", "/api/v1/tasks/", echo)[1])["id"] for _ in range(3)]
        for task_id in done:
            _wait_for(info, task_id, ("COMPLETED",), 30)
        # longer than a worker's shutdown deadline: the stop leaves it EXECUTING
        slow = {**echo, "provider_config": {"delay_ms": 15_000}}
        running = json.loads(_call(info, "POST", "/api/v1/tasks/", slow)[1])["id"]
        _wait_for(info, running, ("EXECUTING",), 30)
        _stop(proc)
        proc, info = launch(tmp_path / "data")
        assert _wait_for(info, running, ("EXECUTING", "COMPLETED"), 5)["status"] == "EXECUTING"

        status, body = _call(info, "POST", "/api/v1/tasks/", echo)
        assert status == 200, body  # applied and projected, not left in the old offsets' gap
        _wait_for(info, json.loads(body)["id"], ("COMPLETED",), 30)
        finished = _wait_for(info, running, ("COMPLETED", "FAILED"), 40)
        assert finished["status"] == "COMPLETED", finished

        truth = json.loads(_call(info, "GET", "/api/v1/tasks/?limit=1000")[1])
        assert len(truth) == 5
        deadline = time.monotonic() + 15
        while (stats := json.loads(_call(info, "GET", "/api/v1/monitoring/stats")[1]))[
            "by_status"
        ] != {"COMPLETED": 5}:
            # the stack's log (warnings and up) says what the processors went through
            log = (tmp_path / "data" / "up.log").read_text(errors="replace")
            assert time.monotonic() < deadline, f"{stats}\n{log[-4000:]}"
            time.sleep(0.5)
        assert stats["total_tasks"] == 5
        _stop(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
