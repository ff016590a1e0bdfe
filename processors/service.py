"""The processors process: consumer-group members for the task state machine and friends.

Foundation stage: the task-command member joins `taskstream.processors.tasks` and
heartbeats; commands it has no handler for yet are dead-lettered with that reason (never
silently dropped). The state machine, projector and stream tables plug in as handlers.
"""

from __future__ import annotations

from streams.consumer import Delivery, PoisonMessage, RecordConsumer
from streams.producer import RecordProducer
from streams.records import WorkerRole
from streams.runtime import MemberProcess, connect_serde, default_worker_id
from streams.topics import TASK_COMMANDS
from taskstream.settings import Settings

TASK_GROUP = "taskstream.processors.tasks"


def reject_unhandled(delivery: Delivery) -> None:
    raise PoisonMessage(f"no handler for {delivery.record.avro_name} in {TASK_GROUP}")


def create_processors(settings: Settings) -> MemberProcess:
    bootstrap = settings.require_bootstrap()
    serde, registry = connect_serde(settings.registry_url(), settings.registry_auth())
    producer = RecordProducer(bootstrap, serde)
    tasks = RecordConsumer(
        bootstrap,
        TASK_GROUP,
        [TASK_COMMANDS],
        serde,
        reject_unhandled,
        producer,
        settings.kafka_session_timeout_ms,
    )
    return MemberProcess(
        role=WorkerRole.PROCESSORS,
        worker_id=settings.worker_id or default_worker_id(WorkerRole.PROCESSORS),
        producer=producer,
        consumers=[tasks],
        interval_s=settings.heartbeat_interval_s,
        queues=[TASK_COMMANDS.name],
        on_close=[registry.close],
    )
