"""The task processor's write path per task, at several batch sizes, without the rest of the
stack: what a consumer batch costs whatever its size, against what each message adds.

    .venv/bin/python bench/task_writes.py [--rounds 60] [--sizes 1,5,20,80]

Starts an embedded Postgres and broker in a temporary directory and a `TaskProcessor` that
never subscribes: the bench hands it consumer batches itself, built as the API and the echo
worker build their records. A round of batch size B is three batches: B CreateTasks, then
B EXECUTING reports, then B COMPLETED reports (the three messages of an echo task), each
applied by the processor's own batch path (one statement) and its outbox produced to the
broker. Prints, per task:
  python    CPU of the processor's thread in the batch path (decode, state machine, the
            statement's parameters, producing the outbox)
  postgres  CPU of the Postgres backends serving it
and, as the baseline measured in the same run, the backend CPU of the least a write
transaction costs (a one-row UPDATE, committed): a batch statement's ratio to it. Less
machine noise than bench/lifecycle.py: one thread, no HTTP, no consumers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
from confluent_kafka import Message, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lifecycle import create_body, create_record  # noqa: E402  (bench/ is on sys.path)

from processors.task_machine import job_id  # noqa: E402
from processors.task_processor import INPUTS, TaskProcessor  # noqa: E402
from state.db import Database  # noqa: E402
from state.migrations import migrate  # noqa: E402
from state.registry_store import RegistryStore  # noqa: E402
from streams.admin import ensure_topics  # noqa: E402
from streams.partitioning import StickyTaskIds, partition_for  # noqa: E402
from streams.producer import RecordProducer  # noqa: E402
from streams.records import Record, TaskStatus, WorkerReport  # noqa: E402
from streams.schemas import load_catalog  # noqa: E402
from streams.serde import AvroSerde  # noqa: E402
from streams.topics import INFERENCE_STATUS, TASK_COMMANDS  # noqa: E402
from taskstream.embedded import EmbeddedBroker, EmbeddedPostgres  # noqa: E402

INSTANCE = "bench"


class Backends:
    """CPU seconds of an embedded Postgres's client backends (not its background workers)."""

    def __init__(self, postmaster_pid: int) -> None:
        self._postmaster = psutil.Process(postmaster_pid)

    def cpu_s(self) -> float:
        total = 0.0
        for proc in self._postmaster.children():
            try:
                if "127.0.0.1" in " ".join(proc.cmdline()):  # "postgres: user db 127.0.0.1(port)"
                    times = proc.cpu_times()
                    total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total


class Feed:
    """Consumer batches as the processor would receive them: the API's CreateTasks on
    tasks.commands, the echo worker's reports on inference.status, at increasing offsets."""

    def __init__(self, serde: AvroSerde) -> None:
        self._serde = serde
        self._ids = StickyTaskIds(TASK_COMMANDS.partitions)
        self._offsets: dict[tuple[str, int], int] = {}
        self._body = create_body(INSTANCE)

    def _message(self, topic: str, record: Record) -> Message:
        key = str(record.task_id)
        partition = partition_for(key, TASK_COMMANDS.partitions)
        offset = self._offsets.get((topic, partition), 0)
        self._offsets[(topic, partition)] = offset + 1
        value = self._serde.serialize(record)
        return Message(
            topic=topic, partition=partition, offset=offset, key=key.encode(), value=value
        )

    def creates(self, n: int) -> tuple[list[uuid.UUID], list[Message]]:
        ids = [self._ids.new() for _ in range(n)]
        messages = [
            self._message(TASK_COMMANDS.name, create_record(task_id, INSTANCE, self._body))
            for task_id in ids
        ]
        return ids, messages

    def reports(self, ids: list[uuid.UUID], status: TaskStatus) -> list[Message]:
        done = {"progress": 100.0, "result_json": '{"echo": true}'}
        return [
            self._message(
                INFERENCE_STATUS.name,
                WorkerReport(
                    report_id=uuid.uuid4(),
                    job_id=job_id(task_id, 1),
                    task_id=task_id,
                    worker_id="bench",
                    attempt=1,
                    status=status,
                    timestamp=datetime.now(UTC),
                    **(done if status == TaskStatus.COMPLETED else {}),
                ),
            )
            for task_id in ids
        ]


def per_task(
    processor: TaskProcessor,
    producer: RecordProducer,
    feed: Feed,
    backends: Backends,
    size: int,
    rounds: int,
) -> tuple[float, float]:
    """(python ms, postgres ms) per task over `rounds` rounds of batch size `size`."""
    python_s = 0.0
    postgres_before = backends.cpu_s()
    for _ in range(rounds):
        ids, creates = feed.creates(size)
        for batch in (
            creates,
            feed.reports(ids, TaskStatus.EXECUTING),
            feed.reports(ids, TaskStatus.COMPLETED),
        ):
            started = time.thread_time()
            processor._process(batch)  # the consumer loop's batch step (run() minus the poll)
            producer.poll()  # outbox acknowledgements, deleted by the next batch's statement
            python_s += time.thread_time() - started
    postgres_s = backends.cpu_s() - postgres_before
    tasks = size * rounds
    return python_s / tasks * 1000, postgres_s / tasks * 1000


def one_row_update_ms(url: str, n: int = 2000) -> float:
    """Backend CPU (ms) of the cheapest write transaction: one prepared one-row UPDATE."""
    with psycopg.connect(url, autocommit=True) as conn:
        backend = psutil.Process(conn.info.backend_pid)
        conn.execute("CREATE TABLE IF NOT EXISTS bench_counter (id int PRIMARY KEY, n bigint)")
        conn.execute("INSERT INTO bench_counter VALUES (1, 0) ON CONFLICT DO NOTHING")
        statement = "UPDATE bench_counter SET n = n + 1 WHERE id = 1"
        for _ in range(20):
            conn.execute(statement, prepare=True)
        before = backend.cpu_times()
        for _ in range(n):
            conn.execute(statement, prepare=True)
        after = backend.cpu_times()
    return (after.user + after.system - before.user - before.system) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=60, help="rounds per batch size")
    parser.add_argument("--sizes", default="1,5,20,80", help="batch sizes (tasks per batch)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="taskstream-bench-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp) / "postgres").start()
        broker = EmbeddedBroker(Path(tmp) / "broker.log").start()
        db = Database(postgres.url, max_size=2).open()
        producer: RecordProducer | None = None
        processor: TaskProcessor | None = None
        try:
            migrate(db)
            ensure_topics(broker.bootstrap)
            serde = AvroSerde(RegistryStore(db), load_catalog())
            serde.register_all()
            producer = RecordProducer(broker.bootstrap, serde)
            processor = TaskProcessor(broker.bootstrap, db, serde, producer, "bench")
            # Every partition, through the processor's own assignment step (claims them in
            # Postgres); nothing is ever produced to them, so its consumer fetches nothing.
            processor._on_assign(
                processor._consumer,
                [
                    TopicPartition(t.name, p)
                    for t in INPUTS
                    for p in range(TASK_COMMANDS.partitions)
                ],
            )
            backends = Backends(postgres.pid)
            feed = Feed(serde)
            per_task(processor, producer, feed, backends, 20, 20)  # warm: caches, prepared plans

            floor = one_row_update_ms(postgres.url)
            print("task processor write path, per task (3 messages: create, EXECUTING, COMPLETED)")
            print(f"baseline  one-row UPDATE, committed: postgres {floor:.3f} ms per statement")
            for size in sizes:
                python_ms, postgres_ms = per_task(
                    processor, producer, feed, backends, size, args.rounds
                )
                statement_ms = postgres_ms / 3 * size  # three batch statements per round
                print(
                    f"batch {size:3d}  python {python_ms:6.3f} ms  postgres {postgres_ms:6.3f} ms"
                    f"   postgres per batch statement {statement_ms:6.3f} ms"
                    f" = {statement_ms / floor:5.1f} x baseline"
                )
        finally:  # the clients before the broker, or librdkafka logs every refused reconnect
            if producer is not None:
                producer.close()
            if processor is not None:
                processor._consumer.close()
            db.close()
            broker.stop()
            postgres.stop()


if __name__ == "__main__":
    main()
