"""Small helpers for tests that look at what is really on a topic."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message

from streams.admin import ensure_topics
from streams.topics import TopicSpec, dead_letter


def fresh_topic(bootstrap: str, prefix: str, with_dlq: bool = True) -> TopicSpec:
    """A topic (and its DLQ) no other test uses."""
    spec = TopicSpec(f"test.{prefix}.{uuid.uuid4().hex[:8]}", key="id", partitions=1)
    ensure_topics(bootstrap, [spec, dead_letter(spec)] if with_dlq else [spec])
    return spec


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Message]:
    """The first `count` messages of a topic (fewer if they do not arrive within `timeout`)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            found += [m for m in consumer.consume(count - len(found), 0.5) if m.error() is None]
    finally:
        consumer.close()
    return found
