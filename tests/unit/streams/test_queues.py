"""Queues (ADR 11): names, topics, consumer groups, and their settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.queues import Queues, consumer_group, job_topics
from streams.topics import ALL
from taskstream.settings import ConfigError, Settings


def topic_names(kind: str, queue: str) -> list[str | None]:
    return [t and t.name for t in job_topics(kind, queue)]


def test_the_default_queues_keep_the_topics_and_groups_they_always_had():
    assert topic_names("inference", "inference") == ["inference.jobs", "inference.jobs.priority"]
    assert topic_names("training", "training") == ["training.jobs", None]
    assert consumer_group("taskstream.gpu.inference", "inference", "inference") == (
        "taskstream.gpu.inference"
    )


def test_a_declared_queue_has_topics_of_both_kinds_and_groups_of_its_own():
    assert topic_names("inference", "hires") == [
        "inference.hires.jobs",
        "inference.hires.jobs.priority",
    ]
    assert topic_names("training", "hires") == ["training.hires.jobs", None]
    # ':' cannot be in a queue name, so no queue's group is another's
    assert consumer_group("taskstream.gpu.inference", "inference", "priority") == (
        "taskstream.gpu.inference:priority"
    )
    every = [t.name for t in Queues(frozenset({"hires"})).every_topic()]
    assert every[: len(ALL)] == [t.name for t in ALL]
    assert every[len(ALL) :] == [
        "inference.hires.jobs",
        "inference.hires.jobs.priority",
        "training.hires.jobs",
        "inference.hires.jobs.dlq",
        "inference.hires.jobs.priority.dlq",
        "training.hires.jobs.dlq",
    ]


@pytest.mark.parametrize(
    ("declared", "by_provider", "error"),
    [
        ({"Hires"}, {}, "must be 1-48 lower-case letters"),
        ({"a.b"}, {}, "must be 1-48 lower-case letters"),
        ({"x" * 49}, {}, "must be 1-48 lower-case letters"),
        ({"inference"}, {}, "names a default queue"),
        ({"default"}, {}, "names a default queue"),
        ({"hires"}, {"fal": "external"}, "routed to queue 'external', which is not declared"),
    ],
)
def test_queues_that_cannot_route_are_refused(declared, by_provider, error):
    with pytest.raises(ValueError, match=error):
        Queues(frozenset(declared), by_provider)


def test_settings_read_queues_as_comma_separated_lists(monkeypatch):
    monkeypatch.setenv("TASKSTREAM_QUEUES", " hires, external ")
    monkeypatch.setenv("TASKSTREAM_PROVIDER_QUEUES", "fal=external, replicate = external")
    monkeypatch.setenv("TASKSTREAM_WORKER_QUEUES", "default,hires")
    settings = Settings()
    routing = settings.queue_routing()
    assert routing.declared == {"hires", "external"}
    assert routing.resolve("inference", None, "replicate") == "external"
    assert settings.served_queues("inference") == ["inference", "hires"]
    assert settings.served_queues("training") == ["training", "hires"]

    monkeypatch.setenv("TASKSTREAM_WORKER_QUEUES", "inference")
    with pytest.raises(ConfigError, match="'inference', not a training queue here"):
        Settings().served_queues("training")
    monkeypatch.delenv("TASKSTREAM_WORKER_QUEUES")
    assert Settings().served_queues("training") == ["training"]

    monkeypatch.setenv("TASKSTREAM_PROVIDER_QUEUES", "fal")
    with pytest.raises(ValidationError, match="'fal' is not a provider=queue pair"):
        Settings()
    monkeypatch.setenv("TASKSTREAM_PROVIDER_QUEUES", "fal=nowhere")
    with pytest.raises(ValidationError, match="'nowhere', which is not declared"):
        Settings()
