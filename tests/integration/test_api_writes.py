"""A write the pipeline cannot apply within the bound answers 202 with where to look, and the
command is applied once the processors run; a command the broker refuses answers 503."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from api.commands import CommandNotSent, CommandRefused, CommandSender, CommandTooLarge
from streams.admin import ensure_topics
from streams.records import CreateTask
from streams.schemas import load_catalog
from streams.serde import AvroSerde
from taskstream.embedded import EmbeddedBroker
from tests.integration.conftest import frozen, run_members, serve_api, settings_for, wait_status
from tests.unit.conftest import MemoryRegistry, make_sample


def test_a_write_past_the_bound_answers_202_and_lands_later(bootstrap, database_url):
    settings = settings_for(bootstrap, database_url, write_timeout_s=0.5)
    with serve_api(settings) as api:  # no processors yet: nothing applies the command
        body = {"task_type": "GENERATION", "prompt": "later", "provider_type": "echo"}
        status, headers, content = api.call_raw(
            "POST",
            "/api/v1/tasks/",
            json.dumps(body).encode(),
            api.admin_token,
            {"Content-Type": "application/json"},
        )
        accepted = json.loads(content)
        assert status == 202 and accepted["detail"] == "accepted; still being applied"
        location = headers["Location"]
        assert location == f"/api/v1/tasks/{accepted['task_id']}"
        assert api.call("GET", location, token=api.admin_token)[0] == 404
        # a training is found under the training routes
        status, headers, content = api.call_raw(
            "POST",
            "/api/v1/training/",
            json.dumps({"trigger_word": "tw"}).encode(),
            api.admin_token,
            {"Content-Type": "application/json"},
        )
        training = json.loads(content)["task_id"]
        assert status == 202 and headers["Location"] == f"/api/v1/training/{training}"
        with run_members(api):
            deadline = time.monotonic() + 30
            while api.call("GET", location, token=api.admin_token)[0] == 404:
                assert time.monotonic() < deadline, "the accepted command was never applied"
                time.sleep(0.1)
            done = wait_status(api, accepted["task_id"], {"COMPLETED"})
            while api.call("GET", headers["Location"], token=api.admin_token)[0] == 404:
                assert time.monotonic() < deadline, "the accepted training was never applied"
                time.sleep(0.1)
        assert done["prompt"] == "later"


def test_a_write_the_broker_never_answers_is_503_within_the_delivery_timeout(
    database_url, tmp_path
):
    broker = EmbeddedBroker(tmp_path / "broker.log").start()  # frozen below: not the module's
    try:
        ensure_topics(broker.bootstrap)
        settings = settings_for(
            broker.bootstrap, database_url, write_timeout_s=0.5, command_delivery_timeout_s=2.0
        )
        with serve_api(settings) as api, frozen(broker.pid):
            started = time.monotonic()
            status, body = api.call(
                "POST",
                "/api/v1/tasks/",
                {"task_type": "GENERATION", "prompt": "p", "provider_type": "echo"},
                api.admin_token,
            )
            waited = time.monotonic() - started
    finally:
        broker.stop()
    assert status == 503 and body["detail"].startswith(
        "the broker did not acknowledge the command (Local: Message timed out)"
    )
    assert 1.5 < waited < 10, waited  # librdkafka's own default would have held it 5 minutes


async def test_a_command_the_broker_refuses_fails_its_awaited_outcome():
    serde = AvroSerde(MemoryRegistry(), load_catalog())
    sender = CommandSender("127.0.0.1:1", serde, **{"message.timeout.ms": 300})
    try:
        outcome = asyncio.get_running_loop().create_future()
        delivery = sender.send(make_sample(CreateTask), outcome)
        with pytest.raises(CommandNotSent):
            await asyncio.wait_for(outcome, 10)
        with pytest.raises(CommandNotSent):
            await delivery.wait()
        assert not delivery.acknowledged
    finally:
        await asyncio.to_thread(sender.close)


async def test_a_command_over_the_message_limit_is_refused_before_it_is_sent():
    serde = AvroSerde(MemoryRegistry(), load_catalog())
    sender = CommandSender("127.0.0.1:1", serde, **{"message.max.bytes": 2000})
    try:
        outcome = asyncio.get_running_loop().create_future()
        with pytest.raises(CommandTooLarge) as refused:
            sender.send(make_sample(CreateTask, payload_json="x" * 5000), outcome)
        assert refused.value.limit == 2000 and refused.value.size > 5000
        assert "over the limit of 2000 bytes" in str(refused.value)
    finally:
        await asyncio.to_thread(sender.close)


async def test_a_full_producer_queue_refuses_the_command_before_sending_it():
    serde = AvroSerde(MemoryRegistry(), load_catalog())
    sender = CommandSender(
        "127.0.0.1:1",
        serde,
        **{"queue.buffering.max.messages": 1, "message.timeout.ms": 300},
    )
    try:
        loop = asyncio.get_running_loop()
        sender.send(make_sample(CreateTask), loop.create_future())  # waits for a broker
        with pytest.raises(CommandRefused) as refused:
            sender.send(make_sample(CreateTask), loop.create_future())
        assert refused.value.sent is False and "Queue full" in str(refused.value)
    finally:
        await asyncio.to_thread(sender.close)
