"""Typed application keys: the API's shared resources, opened and closed in cleanup_ctx."""

from __future__ import annotations

from aiohttp import web

from api.auth import Principal, TokenStore
from api.commands import CommandSender, OutcomeWaiter
from api.heartbeats import HeartbeatMonitor
from api.signing import UrlSigner
from api.task_queries import TaskReader
from state.db import AsyncDatabase, Database
from state.registry_store import RegistryStore
from state.storage import Storage
from streams.latest import LatestRecords
from streams.queues import Queues
from streams.registry import HttpSchemaRegistry
from streams.serde import AvroSerde
from taskstream.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
QUEUES = web.AppKey("queues", Queues)  # settings.queue_routing(), made once
DB = web.AppKey("db", AsyncDatabase)
SYNC_DB = web.AppKey("sync_db", Database)
TOKENS = web.AppKey("tokens", TokenStore)
REGISTRY_STORE = web.AppKey("registry_store", RegistryStore)
EXTERNAL_REGISTRY = web.AppKey("external_registry", HttpSchemaRegistry)
SERDE = web.AppKey("serde", AvroSerde)
HEARTBEATS = web.AppKey("heartbeats", HeartbeatMonitor)
COMMANDS = web.AppKey("commands", CommandSender)
OUTCOMES = web.AppKey("outcomes", OutcomeWaiter)
TASK_READER = web.AppKey("task_reader", TaskReader)
OPENAPI = web.AppKey("openapi", dict)
TASK_COUNTS = web.AppKey("task_counts", LatestRecords)
STORAGE = web.AppKey("storage", Storage)
SIGNER = web.AppKey("signer", UrlSigner)
PRINCIPAL = web.RequestKey("principal", Principal)  # request-scoped: the authenticated caller
