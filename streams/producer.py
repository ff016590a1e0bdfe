"""Producing Avro records: idempotent producer, keys as UTF-8, delivery errors surfaced."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streams.records import Record
from streams.serde import AvroSerde
from streams.topics import TopicSpec

logger = logging.getLogger(__name__)


class DeliveryError(Exception):
    """The broker did not acknowledge a record."""


class RecordProducer:
    def __init__(self, bootstrap: str, serde: AvroSerde, **overrides: Any) -> None:
        conf = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,  # retries never duplicate or reorder within a partition
            # Records wait up to 20 ms to share produce requests: the broker's cost is per
            # request, and every producer of ours is off the create path (the API's commands
            # have their own producer; its writes wait on Postgres NOTIFY). Consumers then take
            # the records in fewer, bigger batches. flush() does not wait for it.
            "linger.ms": 20,
            "compression.type": "lz4",
            **overrides,
        }
        self._producer = Producer(conf)
        self._serde = serde
        self._errors: list[KafkaError] = []

    def send(
        self,
        topic: TopicSpec | str,
        key: str | None,
        record: Record,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Queue one record; `flush` (or `poll`) reports delivery."""
        self.send_raw(topic, key, self._serde.serialize(record), headers)

    def send_raw(
        self,
        topic: TopicSpec | str,
        key: str | bytes | None,
        value: bytes | None,
        headers: dict[str, str] | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue raw bytes; `on_delivery` replaces the default error collection if given, and
        `partition` the partitioner's choice by key."""
        name = topic if isinstance(topic, str) else topic.name
        self._producer.produce(
            name,
            key=key.encode() if isinstance(key, str) else key,
            value=value,
            headers=list((headers or {}).items()),
            on_delivery=on_delivery or self._on_delivery,
            **({} if partition is None else {"partition": partition}),
        )
        self._producer.poll(0)

    def poll(self) -> None:
        """Serve delivery callbacks of what was acknowledged meanwhile, without waiting."""
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued record; raise `DeliveryError` if any was not acknowledged."""
        remaining = self._producer.flush(timeout)
        errors, self._errors = self._errors, []
        if remaining:
            raise DeliveryError(f"{remaining} records not acknowledged within {timeout}s")
        if errors:
            raise DeliveryError(f"{len(errors)} records failed: {errors[0]}")

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, then release the client's threads and connections."""
        try:
            self.flush(timeout)
        finally:
            self._producer.close()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            logger.error("delivery to %s failed: %s", msg.topic(), err)
            self._errors.append(err)
