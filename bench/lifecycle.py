"""End-to-end task throughput and create latency on the embedded stack, with the echo provider.

    .venv/bin/python bench/lifecycle.py [--tasks 2000] [--clients 32]

Starts `taskstream up` (everything embedded) in a temporary data dir, then measures:
  baseline  raw Kafka: produce N small records and consume them back in a group, same broker
  kafka     N CreateTask commands from a Kafka producer -> all COMPLETED visible via the API
            (the producer has delivered one record before the clock starts, as a long-lived
            client has: a fresh idempotent producer spends ~0.5-0.9 s acquiring its
            producer id, which a 3,000-task run would otherwise count against the stack)
  http      N POST /api/v1/tasks/ from `--clients` concurrent clients -> all COMPLETED via API,
            with create latency p50/p99 (each client opens its keep-alive connection with one
            list request before the clock starts, as load generators warm up)
  --stages  also splits the HTTP phase's create latency into stages, for the fastest half, the
            p90-p99 band and the slowest 1%: client -> API handler (the CreateTask's issued_at,
            read back from tasks.commands), handler -> processor's decision (the task's
            created_at, from the monitoring API), decision -> client has the answer
Each figure is printed with its ratio to the baseline and the issue's floor, and each phase
with the CPU milliseconds per task every process of the stack spent and a gauge of the
machine's speed during it (`SpeedGauge`): on a shared machine the same work costs up to ~2x
the CPU in slow spells, and the gauge tells which kind of spell a run had.

The load generator shares the machine's two cores with the stack, so its HTTP clients are
lean (`Connection`: a prebuilt request written to a keep-alive connection, the response
parsed by httptools, on uvloop): ~0.05 ms of CPU per create, where aiohttp's client spent
~0.25 ms, CPU the stack otherwise lost to its own load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import httptools
import psutil
import uvloop
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.producer import RecordProducer  # noqa: E402
from streams.records import CreateTask  # noqa: E402
from streams.registry import HttpSchemaRegistry  # noqa: E402
from streams.runtime import connect_serde  # noqa: E402
from streams.serde import AvroSerde  # noqa: E402
from streams.topics import TASK_COMMANDS  # noqa: E402
from taskstream.stack import launch  # noqa: E402

FLOORS = {"kafka": 1000.0, "http": 500.0, "p99_ms": 100.0}


@contextlib.contextmanager
def embedded_stack() -> Iterator[tuple[subprocess.Popen, dict]]:
    """`taskstream up` in a temporary data dir: (its process, its stack.json), stopped with
    its whole process group on exit."""
    with tempfile.TemporaryDirectory(prefix="taskstream-bench-") as tmp:
        proc, info = launch(Path(tmp))
        try:
            yield proc, info
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)


def role(proc: psutil.Process) -> str:
    """What a process of the stack is: `taskstream <command>` for our own, else its name."""
    try:
        argv = proc.cmdline()
        name = proc.name()
    except psutil.Error:
        return "gone"
    if "taskstream" in argv:
        return " ".join(argv[argv.index("taskstream") + 1 :][:2])
    return "postgres" if name.startswith("postgres") else name


def cpu_by_role(root: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of every live process in the stack, by role; the
    benchmark's own process (the load generator) is `bench`."""
    totals: dict[str, float] = {}
    me = psutil.Process()
    procs = [(me, "bench")]
    top = psutil.Process(root)
    procs += [(p, role(p)) for p in [top, *top.children(recursive=True)]]
    for proc, name in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        totals[name] = totals.get(name, 0.0) + t.user + t.system
    return totals


def cpu_line(before: dict[str, float], after: dict[str, float], n: int, gauge: SpeedGauge) -> str:
    """CPU milliseconds per task spent by each role between two `cpu_by_role` snapshots, and
    the machine's speed gauge meanwhile."""
    per = {k: (after[k] - before.get(k, 0.0)) * 1000 / n for k in after}
    parts = [f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.01]
    return (
        f"          CPU ms/task: total {sum(per.values()):.2f} = {', '.join(parts)}"
        f"   (speed gauge {gauge.ms:.2f} ms)"
    )


class SpeedGauge:
    """How fast the machine is while a phase runs: the CPU time (ms) a fixed piece of Python
    work takes, sampled every 50 ms on a thread of the load generator (~1% of a core); the
    median over the phase. Measured during the phase, not before or after it, because a
    shared machine's speed changes within a run."""

    def __init__(self, every_s: float = 0.05) -> None:
        self._every_s = every_s
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="speed-gauge", daemon=True)

    def __enter__(self) -> SpeedGauge:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            started = time.thread_time()
            sum(range(20_000))
            self._samples.append(time.thread_time() - started)

    @property
    def ms(self) -> float:
        return statistics.median(self._samples) * 1000 if self._samples else float("nan")


def scratch_topic(bootstrap: str, purpose: str, partitions: int) -> str:
    """A new topic `bench.<purpose>.<random>` for the benchmark's own records."""
    topic = f"bench.{purpose}.{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future it returns
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result()
    return topic


def baseline(bootstrap: str, n: int) -> float:
    """Records/s for produce + consume-in-a-group of n records on the same broker."""
    topic = scratch_topic(bootstrap, "baseline", 6)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 20,
        }
    )
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    started = time.perf_counter()
    for i in range(n):
        producer.produce(topic, key=str(i), value=b"x" * 300)
    producer.flush()
    got = 0
    while got < n:
        got += sum(1 for m in consumer.consume(1000, 0.5) if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return n / elapsed


def api_session(info: dict) -> aiohttp.ClientSession:
    """An aiohttp session that authenticates to the stack's API with the admin token."""
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {info['admin_token']}"})


def admin_serde(info: dict) -> tuple[AvroSerde, HttpSchemaRegistry]:
    """The stack's Avro serde over its built-in registry (the caller closes the registry)."""
    return connect_serde(info["schema_registry_url"], f"admin:{info['admin_token']}")


async def at_least_completed(
    session: aiohttp.ClientSession, api: str, instance: str, n: int
) -> bool:
    """Whether the API lists at least n COMPLETED tasks of this run (one tiny request)."""
    params = {"status": "COMPLETED", "origin_instance": instance, "limit": "1", "skip": str(n - 1)}
    async with session.get(f"{api}/api/v1/tasks/", params=params) as resp:
        return len(await resp.json()) == 1


async def wait_all_completed(
    session: aiohttp.ClientSession, api: str, instance: str, n: int, timeout: float
) -> float:
    deadline = time.perf_counter() + timeout
    while not await at_least_completed(session, api, instance, n):
        if time.perf_counter() > deadline:
            raise SystemExit(f"fewer than {n} tasks COMPLETED within {timeout}s")
        await asyncio.sleep(0.05)
    return time.perf_counter()


def payload(instance: str) -> dict:
    return {
        "task_type": "GENERATION",
        "prompt": "bench",
        "provider_type": "echo",
        "origin_instance": instance,
    }


def create_body(instance: str) -> str:
    """`payload(instance)` as the API writes a create's `payload_json`: canonical JSON."""
    return json.dumps(payload(instance), sort_keys=True, separators=(",", ":"))


def create_record(task_id: uuid.UUID, instance: str, body: str) -> CreateTask:
    """The CreateTask a Kafka client produces for an echo task (`body`: `create_body`)."""
    return CreateTask(
        command_id=uuid.uuid4(),
        task_id=task_id,
        issued_at=datetime.now(UTC),
        task_type="GENERATION",
        payload_json=body,
        provider_type="echo",
        origin_instance=instance,
    )


def warm_up(producer: RecordProducer, bootstrap: str) -> None:
    """Deliver one record through `producer` (to a scratch topic), so that its connection and
    idempotent producer id are in place before anything is timed."""
    producer.send_raw(scratch_topic(bootstrap, "warmup", 1), None, b"warm-up")
    producer.flush()


async def via_kafka(info: dict, n: int) -> float:
    instance = f"bench-kafka-{uuid.uuid4().hex[:6]}"
    serde, registry = admin_serde(info)
    producer = RecordProducer(info["bootstrap_servers"], serde)
    warm_up(producer, info["bootstrap_servers"])
    body = create_body(instance)
    async with api_session(info) as session:
        started = time.perf_counter()
        for _ in range(n):
            task_id = uuid.uuid4()
            producer.send(TASK_COMMANDS, str(task_id), create_record(task_id, instance, body))
        producer.flush()
        finished = await wait_all_completed(session, info["api_url"], instance, n, timeout=600)
    producer.close()
    registry.close()
    return n / (finished - started)


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the load generator: `request` writes prebuilt
    request bytes and resolves to (status, body) once httptools has parsed the response."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._response: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(cls, parts.hostname, parts.port)
        return connection

    def request(self, raw: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self._transport is not None and self._response is None, "one request at a time"
        self._response = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return self._response

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol and httptools callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        response, self._response = self._response, None
        body, self._body = b"".join(self._body), []
        if response is not None:
            response.set_result((self._parser.get_status_code(), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._response is not None and not self._response.done():
            self._response.set_exception(ConnectionError(f"the API closed the connection: {exc}"))


def raw_request(method: str, url: str, token: str, body: bytes = b"") -> bytes:
    """An HTTP/1.1 request, ready to write to a keep-alive connection."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


Timeline = list[tuple[float, float, bytes]]  # (sent, answered) wall clock, response body


async def via_http(
    info: dict, instance: str, n: int, clients: int, timeline: Timeline | None = None
) -> tuple[float, float, float]:
    """(tasks/s, p50 ms, p99 ms); with `timeline`, each create's wall-clock times go there."""
    token, api = info["admin_token"], info["api_url"]
    create = raw_request("POST", f"{api}/api/v1/tasks/", token, create_body(instance).encode())
    warm = raw_request("GET", f"{api}/api/v1/tasks/?limit=1", token)
    latencies: list[float] = []
    left = n

    async def client(connection: Connection) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            sent, t0 = time.time(), time.perf_counter()
            status, body = await connection.request(create)
            if status != 200:
                raise SystemExit(f"create answered {status}: {body[:300]!r}")
            latencies.append(time.perf_counter() - t0)
            if timeline is not None:
                timeline.append((sent, time.time(), body))  # parsed after the clock stops

    connections = [await Connection.open(api) for _ in range(clients)]
    try:
        for connection in connections:
            await connection.request(warm)
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in connections))
    finally:
        for connection in connections:
            connection.close()
    async with api_session(info) as session:
        finished = await wait_all_completed(session, api, instance, n, timeout=600)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return n / (finished - started), p50, p99


def issued_times(info: dict) -> dict[str, float]:
    """Each CreateTask's issued_at (the API handler's clock, epoch seconds) on tasks.commands,
    by task id, read from the start of every partition to its end."""
    serde, registry = admin_serde(info)
    consumer = Consumer({"bootstrap.servers": info["bootstrap_servers"], "group.id": "bench"})
    partitions = [
        TopicPartition(TASK_COMMANDS.name, p, OFFSET_BEGINNING)
        for p in range(TASK_COMMANDS.partitions)
    ]
    ends = {tp.partition: consumer.get_watermark_offsets(tp, 10)[1] for tp in partitions}
    consumer.assign(partitions)
    left = {p for p, end in ends.items() if end > 0}
    issued: dict[str, float] = {}
    idle = 0  # an offset short of the end may never come (a transaction's control record)
    while left and idle < 3:
        messages = consumer.consume(1000, 1.0)
        idle = 0 if messages else idle + 1
        for msg in messages:
            if msg.error() is not None:
                continue
            record = serde.deserialize(msg.value())
            if isinstance(record, CreateTask):
                issued[str(record.task_id)] = record.issued_at.timestamp()
            if msg.offset() + 1 >= ends[msg.partition()]:
                left.discard(msg.partition())
    consumer.close()
    registry.close()
    return issued


async def decided_times(info: dict, instance: str) -> dict[str, float]:
    """Each task's created_at (the processor's clock when it decided the create, epoch
    seconds) of one origin instance, by task id, through the monitoring API."""
    decided: dict[str, float] = {}
    async with api_session(info) as session:
        page, pages = 1, 1
        while page <= pages:
            params = {"origin_instance": instance, "page": str(page), "page_size": "500"}
            url = f"{info['api_url']}/api/v1/monitoring/tasks"
            async with session.get(url, params=params) as resp:
                body = await resp.json()
            decided.update(
                (item["id"], datetime.fromisoformat(item["created_at"]).timestamp())
                for item in body["items"]
            )
            page, pages = page + 1, body["pages"]
    return decided


def stage_lines(info: dict, instance: str, timeline: Timeline) -> list[str]:
    """The create latency split into stages (ms, means) for the fastest half, the p90-p99
    band and the slowest 1% of the HTTP phase's creates."""
    issued = issued_times(info)
    decided = asyncio.run(decided_times(info, instance))
    answered = [(sent, done, json.loads(body)["id"]) for sent, done, body in timeline]
    rows = sorted(
        (done - sent, issued[t] - sent, decided[t] - issued[t], done - decided[t])
        for sent, done, t in answered
        if t in issued and t in decided
    )
    n = len(rows)
    lines = [
        f"stages    {n} creates, mean ms: total = client->API handler + handler->processor's",
        "          decision (Kafka, waiting behind batches) + decision->answer (its batch's",
        "          write, NOTIFY, the API's reply)",
    ]
    for name, band in (
        ("fastest half", rows[: n // 2]),
        ("p90-p99", rows[int(n * 0.9) : int(n * 0.99)]),
        ("slowest 1%", rows[int(n * 0.99) :]),
    ):
        total, ingress, decision, answer = (
            statistics.mean(r[i] for r in band) * 1000 for i in range(4)
        )
        lines.append(
            f"          {name:12s} {total:6.1f} = {ingress:5.1f} + {decision:5.1f} + {answer:5.1f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--stages", action="store_true", help="split create latency by stage")
    args = parser.parse_args()
    timeline: Timeline | None = [] if args.stages else None
    instance = f"bench-http-{uuid.uuid4().hex[:6]}"
    with embedded_stack() as (proc, info):
        base = baseline(info["bootstrap_servers"], args.tasks)
        cpu = [cpu_by_role(proc.pid)]
        with SpeedGauge() as kafka_speed:
            kafka = asyncio.run(via_kafka(info, args.tasks))
        cpu.append(cpu_by_role(proc.pid))
        with SpeedGauge() as http_speed:
            http, p50, p99 = uvloop.run(
                via_http(info, instance, args.tasks, args.clients, timeline)
            )
        cpu.append(cpu_by_role(proc.pid))
        stages = stage_lines(info, instance, timeline) if timeline else []
    print(
        f"tasks={args.tasks} clients={args.clients} (echo provider, embedded stack, {os.cpu_count()} cores)"
    )
    print(f"baseline  raw Kafka produce+consume      {base:9.0f} records/s")
    print(
        f"kafka     create -> COMPLETED via API    {kafka:9.0f} tasks/s   ratio {kafka / base:.3f}"
        f"   floor {FLOORS['kafka']:.0f}: {'ok' if kafka >= FLOORS['kafka'] else 'BELOW'}"
    )
    print(cpu_line(cpu[0], cpu[1], args.tasks, kafka_speed))
    print(
        f"http      create -> COMPLETED via API    {http:9.0f} tasks/s   ratio {http / base:.3f}"
        f"   floor {FLOORS['http']:.0f}: {'ok' if http >= FLOORS['http'] else 'BELOW'}"
    )
    print(
        f"http      create latency p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
        f"   floor p99 < {FLOORS['p99_ms']:.0f} ms: {'ok' if p99 < FLOORS['p99_ms'] else 'ABOVE'}"
    )
    print(cpu_line(cpu[1], cpu[2], args.tasks, http_speed))
    for line in stages:
        print(line)


if __name__ == "__main__":
    main()
