"""Topic administration and broker readiness."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.topics import ALL, TopicSpec

logger = logging.getLogger(__name__)


def ensure_topics(
    bootstrap: str, specs: Iterable[TopicSpec] = ALL, timeout: float = 30.0
) -> list[str]:
    """Create each missing topic with its partitions and cleanup policy; return those created.

    Existing topics are left alone (a partition change would move keys between partitions).
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    specs = list(specs)
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [s for s in specs if s.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=-1, config=s.config)
            for s in wanted
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # lost a race: fine
                raise
    logger.info("created topics: %s", ", ".join(sorted(created)) or "none")
    return created


def broker_ready(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when the cluster answers a metadata request within `timeout` seconds."""
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout)
        return True
    except KafkaException:
        return False
