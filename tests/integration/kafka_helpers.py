"""Small helpers for tests that look at what is really on a topic."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from streams.admin import ensure_topics
from streams.topics import TopicSpec, dead_letter


def fresh_topic(bootstrap: str, prefix: str, with_dlq: bool = True) -> TopicSpec:
    """A topic (and its DLQ) no other test uses."""
    spec = TopicSpec(f"test.{prefix}.{uuid.uuid4().hex[:8]}", key="id", partitions=1)
    ensure_topics(bootstrap, [spec, dead_letter(spec)] if with_dlq else [spec])
    return spec


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Message]:
    """The first `count` messages of a topic (fewer if they do not arrive within `timeout`),
    in order within each partition. Reads by assignment: no consumer group to join."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            found += [
                m for m in consumer.consume(min(count - len(found), 1000), 0.5) if m.error() is None
            ]
    finally:
        consumer.close()
    return found
