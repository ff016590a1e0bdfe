"""How long a task with priority waits behind a backlog, against one without it created at
the same moment.

    .venv/bin/python bench/priority.py [--backlog 300] [--delay-ms 10] [--rounds 3]

Starts `taskstream up` (everything embedded) in a temporary data dir. Each round produces a
backlog of `--backlog` echo tasks (priority 0, each job running `--delay-ms`) to
tasks.commands, waits until the inference worker has started on it, then creates through
the API, at the same moment, one task with priority 5 and one with priority 0 (the
baseline). Prints, per round and as medians, each one's wait from its create to its start
(`started_at`), and the ratio of the priority task's wait to the baseline's: how much of the
backlog it passed.

It also prints the idle CPU of the two workers: the inference worker reads two job lanes
(`inference.jobs` and `inference.jobs.priority`), the training worker one, so the difference
is roughly what the second lane costs an idle worker (ADR 10).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lifecycle import (  # noqa: E402
    admin_serde,
    api_session,
    create_record,
    embedded_stack,
    role,
    warm_up,
)

from streams.producer import RecordProducer  # noqa: E402
from streams.topics import TASK_COMMANDS  # noqa: E402


async def count(session: aiohttp.ClientSession, api: str, instance: str, status: str) -> int:
    params = {"origin_instance": instance, "status": status, "page_size": "1"}
    async with session.get(f"{api}/api/v1/monitoring/tasks", params=params) as resp:
        return (await resp.json())["total"]


async def task(session: aiohttp.ClientSession, api: str, task_id: str) -> dict:
    async with session.get(f"{api}/api/v1/tasks/{task_id}") as resp:
        return await resp.json()


async def one_round(info: dict, producer: RecordProducer, backlog: int, delay_ms: int) -> dict:
    api = info["api_url"]
    instance = f"bench-prio-{uuid.uuid4().hex[:6]}"
    fields = {
        "prompt": "backlog",
        "origin_instance": instance,
        "provider_config": {"delay_ms": delay_ms},
    }
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"))  # as the API writes it
    for _ in range(backlog):
        task_id = uuid.uuid4()
        producer.send(TASK_COMMANDS, str(task_id), create_record(task_id, instance, body))
    producer.flush()
    async with api_session(info) as session:
        while await count(session, api, instance, "COMPLETED") < 5:  # the worker is on it
            await asyncio.sleep(0.05)
        body = {"task_type": "GENERATION", "prompt": "p", "provider_type": "echo"}
        body |= {"origin_instance": instance, "provider_config": {"delay_ms": delay_ms}}

        async def create(priority: int) -> tuple[dict, float]:
            async with session.post(
                f"{api}/api/v1/tasks/", json={**body, "priority": priority}
            ) as r:
                return await r.json(), time.time()

        (urgent, _), (plain, _) = await asyncio.gather(create(5), create(0))
        waiting = backlog - await count(session, api, instance, "COMPLETED")
        deadline = time.monotonic() + 600
        while (await task(session, api, plain["id"]))["status"] != "COMPLETED":
            if time.monotonic() > deadline:
                raise SystemExit("the baseline task did not complete within 600 s")
            await asyncio.sleep(0.1)
        urgent, plain = (
            await task(session, api, urgent["id"]),
            await task(session, api, plain["id"]),
        )
    return {"urgent": wait_s(urgent), "plain": wait_s(plain), "waiting": waiting}


def wait_s(task: dict) -> float:
    """Seconds from a task's creation to its start."""
    created, started = (datetime.fromisoformat(task[k]) for k in ("created_at", "started_at"))
    return (started - created).total_seconds()


def idle_cpu_ms_per_s(root: int, seconds: float) -> dict[str, float]:
    """CPU milliseconds a second each worker spends while nothing is asked of the stack."""
    workers = {
        role(p): p for p in psutil.Process(root).children(recursive=True) if "worker" in role(p)
    }
    before = {name: sum(p.cpu_times()[:2]) for name, p in workers.items()}
    time.sleep(seconds)
    return {
        name: (sum(p.cpu_times()[:2]) - before[name]) * 1000 / seconds
        for name, p in workers.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=300)
    parser.add_argument("--delay-ms", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with embedded_stack() as (proc, info):
        time.sleep(3)  # past the start-up work
        idle = idle_cpu_ms_per_s(proc.pid, 10)
        serde, registry = admin_serde(info)
        producer = RecordProducer(info["bootstrap_servers"], serde)
        warm_up(producer, info["bootstrap_servers"])
        rounds = [
            asyncio.run(one_round(info, producer, args.backlog, args.delay_ms))
            for _ in range(args.rounds)
        ]
        producer.close()
        registry.close()
    print(
        f"backlog={args.backlog} echo tasks of {args.delay_ms} ms, {args.rounds} rounds"
        f" (embedded stack, {os.cpu_count()} cores)"
    )
    for i, r in enumerate(rounds, 1):
        print(
            f"round {i}   {r['waiting']:4d} backlog tasks waiting: priority 5 waited"
            f" {r['urgent']:6.2f} s, priority 0 (baseline) {r['plain']:6.2f} s"
            f"   ratio {r['urgent'] / r['plain']:.3f}"
        )
    urgent = statistics.median(r["urgent"] for r in rounds)
    plain = statistics.median(r["plain"] for r in rounds)
    print(
        f"median    priority 5 waited {urgent:6.2f} s, baseline {plain:6.2f} s"
        f"   ratio {urgent / plain:.3f}"
    )
    print(
        "idle CPU  "
        + ", ".join(f"{name} {ms:.1f} ms/s" for name, ms in sorted(idle.items()))
        + "   (inference reads two job lanes, training one)"
    )


if __name__ == "__main__":
    main()
