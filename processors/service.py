"""The processors process: the task processor (single writer of task state), with the
workflow orchestrator, stream tables and webhook sink to join it as their issues land."""

from __future__ import annotations

from processors.count_tables import CountTables
from processors.task_processor import TaskProcessor
from state.db import Database
from streams.admin import ensure_topics
from streams.producer import RecordProducer
from streams.records import WorkerRole
from streams.runtime import MemberProcess, connect_serde, default_worker_id
from streams.topics import TASK_COMMANDS
from taskstream.settings import Settings


def create_processors(settings: Settings, leave_group: bool = True) -> MemberProcess:
    """The processors process's members. `leave_group=False`: they stop without leaving
    their consumer groups (see `taskstream.cli.cmd_processors`)."""
    bootstrap = settings.require_bootstrap()
    queues = settings.queue_routing()
    # whichever service starts first creates them (docker-compose)
    ensure_topics(bootstrap, queues.every_topic())
    serde, registry = connect_serde(settings.registry_url(), settings.registry_auth())
    producer = RecordProducer(bootstrap, serde)
    worker_id = settings.worker_id or default_worker_id(WorkerRole.PROCESSORS)
    db = Database(settings.require_database_url(), max_size=4).open()
    tasks = TaskProcessor(
        bootstrap,
        db,
        serde,
        producer,
        worker_id,
        settings.kafka_session_timeout_ms,
        settings.kafka_fetch_wait_ms,
        leave_group=leave_group,
        queues=queues,
    )
    counts = CountTables(
        bootstrap,
        serde,
        producer,
        settings.data_dir / "faust",
        settings.kafka_session_timeout_ms,
        single_record_batches=settings.kafka_single_record_batches,
        leave_group=leave_group,
    )
    return MemberProcess(
        role=WorkerRole.PROCESSORS,
        worker_id=worker_id,
        producer=producer,
        consumers=[tasks, counts],
        interval_s=settings.heartbeat_interval_s,
        queues=[TASK_COMMANDS.name],
        on_close=[registry.close, db.close],
    )
