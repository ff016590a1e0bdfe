"""Queues: where a task's jobs go, and which workers take them (F2, ADR 11).

Every task runs on a queue. Each kind of work has a default queue named after it
(`inference`, `training`), on the job topics it always had. An operator may declare more
(`TASKSTREAM_QUEUES`): each is a pair of job-topic sets, one per kind, read only by workers
told to serve it (`TASKSTREAM_WORKER_QUEUES`), for instance a pool of larger GPUs or a
tenant's own machines.

A task names its queue with `queue_name`; without one, its `provider_type` picks it
(`TASKSTREAM_PROVIDER_QUEUES`), else its kind's default queue. The queue is resolved once,
when the task is created (a PUT of `queue_name` moves its later attempts), and a name no
process knows is refused with 422 rather than left waiting for a worker that never comes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from streams.records import TRAINING_TASK_TYPE
from streams.topics import (
    ALL,
    INFERENCE_JOBS,
    INFERENCE_JOBS_PRIORITY,
    TRAINING_JOBS,
    TopicSpec,
    dead_letter,
)

INFERENCE = "inference"
TRAINING = "training"
DEFAULT_QUEUES = (INFERENCE, TRAINING)  # each kind's own; also the names of the kinds
DEFAULT_ALIAS = "default"  # in a worker's queue list: its kind's default queue
#: Lower-case letters, digits and hyphens: a queue's name is part of topic and group names,
#: where '.' separates the parts (and Kafka folds '.' and '_' together in metric names).
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,47}")


def kind_of(task_type: str) -> str:
    """The kind of work a task type is: `training` for training tasks, else `inference`."""
    return TRAINING if task_type == TRAINING_TASK_TYPE else INFERENCE


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(
            f"queue name {name!r} must be 1-48 lower-case letters, digits or hyphens,"
            " starting with a letter or digit"
        )
    return name


def job_topics(kind: str, queue: str) -> tuple[TopicSpec, TopicSpec | None]:
    """A queue's job topics for one kind of work: its jobs, and (inference) the jobs of
    tasks with priority > 0, read by a lane of their own (ADR 10)."""
    if kind == TRAINING:
        if queue == TRAINING:
            return TRAINING_JOBS, None
        return TopicSpec(f"training.{queue}.jobs", key="task_id", partitions=6), None
    if queue == INFERENCE:
        return INFERENCE_JOBS, INFERENCE_JOBS_PRIORITY
    main = TopicSpec(f"inference.{queue}.jobs", key="task_id", partitions=6)
    return main, TopicSpec(main.name + ".priority", key="task_id", partitions=6)


def consumer_group(base: str, kind: str, queue: str) -> str:
    """A queue's consumer group for workers of one kind: `base` itself for the kind's
    default queue (the group names before queues existed), `base:queue` for the others."""
    return base if queue == kind else f"{base}:{queue}"


def lanes(base: str, kind: str, queues: list[str]) -> list[tuple[str, TopicSpec]]:
    """(consumer group, job topic) of each lane a worker of `kind` serving `queues` reads:
    every queue's jobs, and for inference its priority jobs in a lane of their own (ADR 10),
    in the group of the queue's with `.priority` appended."""
    read = []
    for queue in queues:
        group = consumer_group(base, kind, queue)
        jobs, urgent = job_topics(kind, queue)
        read.append((group, jobs))
        if urgent is not None:
            read.append((f"{group}.priority", urgent))
    return read


@dataclass(frozen=True)
class Queues:
    """The queues an installation declared, and which providers' tasks go to which."""

    declared: frozenset[str] = frozenset()  # besides the defaults
    by_provider: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.declared:
            check_name(name)
            if name in (*DEFAULT_QUEUES, DEFAULT_ALIAS):
                raise ValueError(f"{name!r} names a default queue; declare only others")
        for provider, queue in self.by_provider.items():
            if queue not in self.declared:
                raise ValueError(
                    f"provider {provider!r} is routed to queue {queue!r}, which is not declared"
                    " (providers are routed only to declared queues)"
                )

    def known(self, kind: str) -> list[str]:
        """The queues a task of this kind may name: its default and the declared ones."""
        return [kind, *sorted(self.declared)]

    def resolve(self, kind: str, queue_name: str | None, provider_type: str | None) -> str:
        """The queue a task of `kind` runs on; `ValueError` (with what would be accepted)
        for a name that is not one of `known(kind)`."""
        if queue_name is None:
            return self.by_provider.get(provider_type or "", kind)
        if queue_name == kind or queue_name in self.declared:
            return queue_name
        self._refuse(kind, queue_name)

    def _refuse(self, kind: str, queue_name: str) -> NoReturn:
        known = ", ".join(repr(q) for q in self.known(kind))
        if queue_name in DEFAULT_QUEUES:
            raise ValueError(
                f"queue {queue_name!r} takes {queue_name} work, not {kind}; known {kind}"
                f" queues: {known}"
            )
        raise ValueError(f"unknown queue {queue_name!r}; known {kind} queues: {known}")

    def job_topics(self) -> list[TopicSpec]:
        """Every queue's job topics, of both kinds, the default queues' first."""
        queues = [(kind, kind) for kind in DEFAULT_QUEUES]
        queues += [(kind, queue) for queue in sorted(self.declared) for kind in DEFAULT_QUEUES]
        return [spec for kind, queue in queues for spec in job_topics(kind, queue) if spec]

    def every_topic(self) -> list[TopicSpec]:
        """Every topic the installation uses: `streams.topics.ALL`, and the declared queues'
        job topics with their dead-letter topics."""
        declared = [spec for spec in self.job_topics() if spec not in ALL]
        return [*ALL, *declared, *(dead_letter(spec) for spec in declared)]
