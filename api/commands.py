"""Sending commands and awaiting their outcomes, for read-your-writes.

`CommandSender` produces a command to `tasks.commands` without blocking the event loop (a
thread polls the producer for acknowledgements). A request then awaits the command's
outcome: its notification comes after the broker's acknowledgement anyway, so a delivered
command costs the event loop no wake-up of its own; a refused one fails the awaited outcome
with `CommandNotSent`. `OutcomeWaiter` listens on Postgres channel `command_outcomes`, where
the task processor NOTIFYs `<command id> <outcome>[ <task row as JSON>]` in the same
transaction that applies it, so when a waiter wakes the task row already shows the command's
effect, and usually comes with it; only a rejection's reason is read from the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from api.task_queries import row_from_json
from state.db import AsyncDatabase
from streams.records import Record
from streams.serde import AvroSerde
from streams.topics import TASK_COMMANDS
from taskstream import jsonio

logger = logging.getLogger(__name__)
LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000  # the producer's `message.max.bytes` by default


class CommandNotSent(Exception):
    """The broker did not acknowledge a command. It may have it all the same (an
    acknowledgement lost, or a delivery timed out mid-request), unless `sent` is False."""

    sent = True


class CommandRefused(CommandNotSent):
    """The producer refused the command before sending it."""

    sent = False


class CommandTooLarge(CommandRefused):
    """The command is over the producer's message size; nothing was sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the command is {size} bytes, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


@dataclass
class Delivery:
    """A produced command's delivery, as the producer's thread reports it."""

    acknowledged: bool = False
    error: CommandNotSent | None = None

    async def wait(self, poll_s: float = 0.01) -> None:
        """Return once the broker has the command (raise `CommandNotSent` if it refused it).
        Only a request still waiting past its bound needs this, so a short poll does."""
        while not self.acknowledged:
            if self.error is not None:
                raise self.error
            await asyncio.sleep(poll_s)


class CommandSender:
    def __init__(self, bootstrap: str, serde: AvroSerde, **overrides: Any) -> None:
        self._serde = serde
        config = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 2,
            **overrides,
        }
        self._max_bytes = int(config.get("message.max.bytes", LIBRDKAFKA_MESSAGE_MAX_BYTES))
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="command-sender", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def send(self, record: Record, outcome: asyncio.Future) -> Delivery:
        """Produce one command keyed by its task id, without waiting. If the broker refuses
        it, `outcome` (the future awaiting the command's outcome) fails with
        `CommandNotSent`; the returned `Delivery` tells whether the broker has it."""
        loop = asyncio.get_running_loop()
        delivery = Delivery()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                delivery.acknowledged = True
            else:
                delivery.error = CommandNotSent(err.str())
                loop.call_soon_threadsafe(_fail, outcome, delivery.error)

        value = self._serde.serialize(record)
        try:
            self._producer.produce(
                TASK_COMMANDS.name, key=str(record.task_id), value=value, on_delivery=delivered
            )
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                raise CommandTooLarge(len(value), self._max_bytes) from None
            raise CommandRefused(str(exc)) from None
        except BufferError as exc:  # the producer's queue is full: the broker is not taking any
            raise CommandRefused(str(exc)) from None
        return delivery

    def close(self) -> None:
        self._producer.flush(10)
        self._stop.set()
        self._poller.join(5)
        self._producer.close()


def _fail(future: asyncio.Future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


@dataclass(frozen=True)
class Outcome:
    applied: bool
    reason: str | None = None
    status_code: int | None = None
    row: dict[str, Any] | None = None  # the task as the command left it, when it was sent


def parse_notification(payload: str) -> tuple[str, str, dict[str, Any] | None]:
    """(command id, outcome, task row or None) of a `command_outcomes` payload."""
    command_id, _, rest = payload.partition(" ")
    outcome, _, row = rest.partition(" ")
    return command_id, outcome, row_from_json(jsonio.loads(row)) if row else None


class OutcomeWaiter:
    def __init__(self, url: str, db: AsyncDatabase) -> None:
        self._url = url
        self._db = db
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self._task: asyncio.Task | None = None
        self._listening = asyncio.Event()

    async def start(self) -> OutcomeWaiter:
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._listening.wait(), 30)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def expect(self, command_id: UUID) -> asyncio.Future[Outcome]:
        """Register interest before sending the command, so no notification is missed."""
        future = asyncio.get_running_loop().create_future()
        self._waiting[str(command_id)] = future
        return future

    def forget(self, command_id: UUID) -> None:
        """Drop the interest in a command that was never sent."""
        self._waiting.pop(str(command_id), None)

    async def wait(
        self, command_id: UUID, future: asyncio.Future[Outcome], timeout: float
    ) -> Outcome | None:
        """The command's outcome, or None if it is not known within `timeout` seconds."""
        try:
            outcome = await asyncio.wait_for(future, timeout)
            if outcome.applied:
                return outcome
        except TimeoutError:
            pass  # a notification may have been lost across a reconnect: the table decides
        finally:
            self._waiting.pop(str(command_id), None)
        return await self.lookup(command_id)

    async def lookup(self, command_id: UUID) -> Outcome | None:
        row = await self._db.fetchone(
            "SELECT outcome, reason, status_code FROM command_outcomes WHERE command_id = %s",
            (command_id,),
        )
        if row is None:
            return None
        return Outcome(row[0] == "APPLIED", row[1], row[2])

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True
                ) as conn:
                    await conn.execute("LISTEN command_outcomes")
                    self._listening.set()
                    async for note in conn.notifies():
                        command_id = note.payload.partition(" ")[0]
                        future = self._waiting.get(command_id)
                        if future is not None and not future.done():
                            _, outcome, row = parse_notification(note.payload)
                            future.set_result(Outcome(outcome == "APPLIED", row=row))
            except (psycopg.Error, OSError) as exc:
                logger.warning("outcome listener lost its connection (%s); reconnecting", exc)
                await asyncio.sleep(1)
