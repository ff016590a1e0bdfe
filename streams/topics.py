"""Every Kafka topic taskstream uses: name, key, partitions, cleanup policy, records carried.

Nothing else in the code base spells a topic name. `ensure_topics` creates them idempotently.
"""

from __future__ import annotations

from dataclasses import dataclass

DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None

    @property
    def config(self) -> dict[str, str]:
        conf = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            conf["retention.ms"] = str(self.retention_ms)
        return conf

    @property
    def dlq(self) -> str:
        return self.name + DLQ_SUFFIX


# Partition counts: the task processor's parallelism is bounded by tasks.commands; 6 lets a
# 2-core machine run one member and a deployment scale to 6 without repartitioning (which
# would move keys and break per-task ordering).
TASK_COMMANDS = TopicSpec("tasks.commands", key="task_id", partitions=6)
TASK_EVENTS = TopicSpec("tasks.events", key="task_id", partitions=6)
INFERENCE_JOBS = TopicSpec("inference.jobs", key="task_id", partitions=6)
# The jobs of tasks with priority > 0, read by a lane of their own so that they pass any
# backlog of inference.jobs (ADR 10).
INFERENCE_JOBS_PRIORITY = TopicSpec("inference.jobs.priority", key="task_id", partitions=6)
TRAINING_JOBS = TopicSpec("training.jobs", key="task_id", partitions=6)
INFERENCE_STATUS = TopicSpec("inference.status", key="task_id", partitions=6)
TRAINING_STATUS = TopicSpec("training.status", key="task_id", partitions=6)
PREPROCESSING_STATUS = TopicSpec("preprocessing.status", key="task_id", partitions=6)
WORKFLOW_COMMANDS = TopicSpec("workflows.commands", key="workflow_id", partitions=3)
WORKFLOW_EVENTS = TopicSpec("workflows.events", key="workflow_id", partitions=3)
WORKER_HEARTBEATS = TopicSpec("workers.heartbeats", key="worker_id", partitions=1, compacted=True)
WEBHOOK_RETRY = TopicSpec("webhooks.retry", key="event_id", partitions=3)
# One TaskCountsDelta per batch of the task processor, to the partition it came from.
TASK_COUNTS = TopicSpec("tasks.counts", key="partition", partitions=6)
MONITORING_STATS = TopicSpec("monitoring.stats", key="partition", partitions=1, compacted=True)
# JobCancelled records for the workers' cancellation watches, which would otherwise fetch
# and sift tasks.events (~6 records per task) for the few jobs to stop.
TASK_CANCELLATIONS = TopicSpec(
    "tasks.cancellations", key="task_id", partitions=6, retention_ms=24 * 3600 * 1000
)

PRIMARY: tuple[TopicSpec, ...] = (
    TASK_COMMANDS,
    TASK_EVENTS,
    INFERENCE_JOBS,
    INFERENCE_JOBS_PRIORITY,
    TRAINING_JOBS,
    INFERENCE_STATUS,
    TRAINING_STATUS,
    PREPROCESSING_STATUS,
    WORKFLOW_COMMANDS,
    WORKFLOW_EVENTS,
    WORKER_HEARTBEATS,
    WEBHOOK_RETRY,
    TASK_COUNTS,
    MONITORING_STATS,
    TASK_CANCELLATIONS,
)


def dead_letter(spec: TopicSpec) -> TopicSpec:
    """The topic's dead-letter queue: poison messages with the error, kept 14 days."""
    return TopicSpec(spec.dlq, key=spec.key, partitions=1, retention_ms=14 * 24 * 3600 * 1000)


ALL: tuple[TopicSpec, ...] = PRIMARY + tuple(dead_letter(t) for t in PRIMARY if not t.compacted)


def by_name(name: str) -> TopicSpec:
    for spec in ALL:
        if spec.name == name:
            return spec
    raise KeyError(f"no topic named {name!r} in streams.topics")
