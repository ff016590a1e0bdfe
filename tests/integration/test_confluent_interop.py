"""confluent-kafka's own Avro serializer and deserializer, pointed at the built-in schema
registry, interoperate with taskstream in both directions through the broker."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.consumer import Delivery, RecordConsumer
from streams.producer import RecordProducer
from streams.records import CreateTask, EventType, TaskStatus, TaskStatusEvent
from streams.registry import HttpSchemaRegistry
from streams.schemas import load_catalog
from streams.serde import AvroSerde
from tests.integration.kafka_helpers import fresh_topic, read_topic

CATALOG = load_catalog()


@pytest.fixture
def confluent_registry(running_api):
    client = SchemaRegistryClient(
        {
            "url": running_api.url + "/schema-registry",
            "basic.auth.user.info": f"admin:{running_api.admin_token}",
        }
    )
    yield client
    client.close()


@pytest.fixture
def serde(running_api):
    registry = HttpSchemaRegistry(
        running_api.url + "/schema-registry", f"admin:{running_api.admin_token}"
    )
    serde = AvroSerde(registry, CATALOG)
    serde.register_all()
    yield serde
    registry.close()


def test_a_record_written_by_confluents_serializer_is_read_by_taskstream(
    bootstrap, confluent_registry, serde
):
    topic = fresh_topic(bootstrap, "interop-in")
    serializer = AvroSerializer(
        confluent_registry,
        CATALOG.text("taskstream.commands.CreateTask"),
        conf={"subject.name.strategy": record_subject_name_strategy},
    )
    sent = {
        "command_id": uuid.uuid4(),
        "task_id": uuid.uuid4(),
        "issued_at": datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
        "tenant": "acme",
        "task_type": "GENERATION",
        "payload_json": '{"prompt": "a red circle"}',
        "priority": 3,
        "provider_type": None,
        "idempotency_key": "k-1",
        "origin_instance": "production",
        "origin_zone": "eu",
        "origin_version": None,
    }
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(
        topic.name,
        key=str(sent["task_id"]),
        value=serializer(sent, SerializationContext(topic.name, MessageField.VALUE)),
    )
    assert producer.flush(10) == 0

    received: list[Delivery] = []
    stop = threading.Event()
    consumer = RecordConsumer(
        bootstrap,
        f"test-{uuid.uuid4()}",
        [topic],
        serde,
        lambda d: (received.append(d), stop.set()),
        RecordProducer(bootstrap, serde),
    )
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert received[0].record == CreateTask(**sent)
    assert received[0].key == str(sent["task_id"])


def test_a_record_written_by_taskstream_is_read_by_confluents_deserializer(
    bootstrap, confluent_registry, serde
):
    topic = fresh_topic(bootstrap, "interop-out")
    event = TaskStatusEvent(
        event_type=EventType.TASK_STATUS,
        task_id=uuid.uuid4(),
        status=TaskStatus.EXECUTING,
        timestamp=datetime(2026, 5, 1, 12, 0, 1, tzinfo=UTC),
        origin_instance="staging",
        task_type="GENERATION",
        progress=12.5,
        started_at=datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
        metadata={"trace": "abc"},
    )
    producer = RecordProducer(bootstrap, serde)
    producer.send(topic, str(event.task_id), event)
    producer.flush()

    [msg] = read_topic(bootstrap, topic.name, 1)
    deserializer = AvroDeserializer(confluent_registry)
    value = deserializer(msg.value(), SerializationContext(topic.name, MessageField.VALUE))
    assert (
        value["status"] == "EXECUTING"
        and value["progress"] == 12.5
        and value["metadata"] == {"trace": "abc"}
    )
    assert TaskStatusEvent.model_validate(value) == event


def test_both_sides_agree_on_subjects_and_ids(confluent_registry, serde):
    name = "taskstream.events.TaskStatusEvent"
    registered = confluent_registry.get_latest_version(name)
    assert registered.schema_id == serde.schema_id(name)
