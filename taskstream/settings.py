"""Process settings, read once from the environment at start and passed down.

`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL` and `SCHEMA_REGISTRY_URL` keep their conventional
names; everything else is `TASKSTREAM_*`. When the three are unset, `taskstream up` starts
embedded infrastructure and hands its addresses to the child processes through the same
variables, so every process reads configuration one way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streams.queues import DEFAULT_ALIAS, Queues, check_name
from streams.topics import TASK_COMMANDS


class ConfigError(RuntimeError):
    """A setting a command needs is missing or unusable; the CLI says so in one line."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKSTREAM_", frozen=True, extra="ignore")

    data_dir: Path = Field(
        Path(".taskstream"), description="Postgres data, models, storage, stack.json."
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    admin_token: SecretStr | None = Field(
        None, description="Admin bearer token; generated when unset."
    )
    log_level: str = "INFO"

    kafka_bootstrap_servers: str | None = Field(
        None, validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS")
    )
    database_url: SecretStr | None = Field(None, validation_alias=AliasChoices("DATABASE_URL"))
    schema_registry_url: str | None = Field(
        None,
        validation_alias=AliasChoices("SCHEMA_REGISTRY_URL"),
        description="Unset in the API: it serves the built-in registry itself.",
    )
    schema_registry_basic_auth: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SCHEMA_REGISTRY_BASIC_AUTH"),
        description="user:password for the registry; defaults to the admin token for the built-in one.",
    )

    # The embedded broker rebalances slowly with Kafka's 45 s default session timeout
    # (about 23 s per join); 6 s brings a join to about 3.6 s.
    kafka_session_timeout_ms: int = Field(6000, ge=1000)
    # The embedded broker answers a waiting fetch only when fetch.wait.max.ms runs out (new
    # data does not wake it): measured 202 ms per hop at Kafka's 500 ms default, 2 ms at 10-20.
    kafka_fetch_wait_ms: int = Field(20, ge=1, le=500)
    # The same for readers off the hot path (workers' job fetches, cancellation watches,
    # heartbeats, stream-table snapshots): each idle fetch costs the broker CPU, and these
    # tolerate 200 ms.
    kafka_watch_fetch_wait_ms: int = Field(200, ge=1, le=1000)
    # tansu 0.6 reports a partition's high watermark as the last batch's base offset + 1, so
    # readers that stop at the watermark (faust's changelog recovery) miss the tail of a
    # multi-record batch. `taskstream up` sets this when it runs the embedded broker.
    kafka_single_record_batches: bool = False
    heartbeat_interval_s: float = Field(2.0, gt=0, description="Seconds between worker heartbeats.")
    processors: int = Field(
        2,
        ge=1,
        le=TASK_COMMANDS.partitions,  # a member beyond the partitions would idle
        description="Processors processes `taskstream up` runs: members of one consumer group "
        "sharing the task partitions (each is one busy Python thread, so one per core helps).",
    )
    max_request_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="Largest accepted HTTP body."
    )
    write_timeout_s: float = Field(
        5.0, gt=0, description="How long a write waits for its outcome before answering 202."
    )
    database_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long an API request waits on Postgres before it answers 503 (against a"
        " server that answers nothing, cancelling the query adds up to ~10 s).",
    )
    command_delivery_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long the API's producer tries to deliver a command to the broker before"
        " the request answers 503 (librdkafka's `message.timeout.ms`, 5 minutes by default).",
    )
    worker_id: str | None = Field(None, description="Defaults to <role>-<hostname>-<pid>.")

    storage_dir: Path | None = Field(
        None, description="Root of the local object store; <data dir>/storage when unset."
    )
    url_signing_key: SecretStr | None = Field(
        None, description="Key of signed storage URLs; derived from the admin token when unset."
    )
    storage_url: str | None = Field(
        None, description="s3://bucket/prefix for S3-compatible storage (AWS_* variables apply)."
    )
    models_dir: Path | None = Field(
        None, description="Pipelines and LoRAs by name; <data dir>/models when unset."
    )
    default_model: str = Field(
        "shapes-32", description="Model for tasks that name none (built in: 'shapes-32')."
    )
    strict_models: bool = Field(
        False, description="A task naming a model this worker lacks fails, not uses the default."
    )
    lora_max_bytes: int = Field(
        500 * 1024 * 1024, gt=0, description="Largest LoRA file an upload may store."
    )
    allow_private_image_urls: bool = Field(
        False, description="Let tasks fetch input images from private or loopback addresses."
    )
    # Batched calls match single ones only to float rounding (about 1e-6, so a pixel may be one
    # 8-bit level off): 1 keeps "same seed, same bytes"; raise it for throughput on GPUs.
    worker_max_batch: int = Field(
        1, ge=1, le=64, description="Compatible waiting inference jobs run as one batched call."
    )
    retry_backoff_s: float = Field(
        0.5, ge=0, description="A retry waits this long, doubling per attempt (at most 30 s)."
    )
    worker_max_pixels: int = Field(
        1024 * 1024, gt=0, description="Largest output (width x height) a worker renders."
    )
    # Queues (ADR 11), as comma-separated lists: every process must be given the same
    # `queues` and `provider_queues`; `worker_queues` is each worker's own.
    queues: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Queues besides the default 'inference' and 'training', e.g. 'hires,eu'."
    )
    provider_queues: Annotated[dict[str, str], NoDecode] = Field(
        {}, description="provider=queue pairs: a task naming no queue runs on its provider's."
    )
    worker_queues: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Queues this worker serves ('default': its kind's default queue, also what"
        " it serves when unset), e.g. 'default,hires'.",
    )

    @field_validator("queues", "worker_queues", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(check_name(name.strip()) for name in value.split(",") if name.strip())
        return value

    @field_validator("provider_queues", mode="before")
    @classmethod
    def _pairs(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            provider, sep, queue = (x.strip() for x in item.partition("="))
            if not (sep and provider and queue):
                raise ValueError(f"{item!r} is not a provider=queue pair")
            pairs[provider] = queue
        return pairs

    @model_validator(mode="after")
    def _routable(self) -> Settings:
        self.queue_routing()  # raises ValueError for a queue set that cannot route
        return self

    def queue_routing(self) -> Queues:
        return Queues(frozenset(self.queues), dict(self.provider_queues))

    def served_queues(self, kind: str) -> list[str]:
        """The queues a worker of `kind` reads; `ConfigError` for one that is not declared."""
        known = self.queue_routing().known(kind)
        served = [kind if q == DEFAULT_ALIAS else q for q in self.worker_queues] or [kind]
        for queue in served:
            if queue not in known:
                raise ConfigError(
                    f"TASKSTREAM_WORKER_QUEUES names {queue!r}, not a {kind} queue here"
                    f" (known: {DEFAULT_ALIAS}, {', '.join(known)}; declare others in"
                    " TASKSTREAM_QUEUES)"
                )
        return list(dict.fromkeys(served))

    def storage_root(self) -> Path:
        return self.storage_dir or self.data_dir / "storage"

    def models_root(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def builtin_registry(self) -> bool:
        return self.schema_registry_url is None

    def registry_url(self) -> str:
        """Where clients reach the schema registry (the API's built-in one by default)."""
        return self.schema_registry_url or f"http://{self.api_host}:{self.api_port}/schema-registry"

    def registry_auth(self) -> str | None:
        if self.schema_registry_basic_auth is not None:
            return self.schema_registry_basic_auth.get_secret_value()
        if self.builtin_registry and self.admin_token is not None:
            return f"admin:{self.admin_token.get_secret_value()}"
        return None

    def require_bootstrap(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise ConfigError(
                "KAFKA_BOOTSTRAP_SERVERS is not set (run `taskstream up` for the embedded broker)"
            )
        return self.kafka_bootstrap_servers

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ConfigError("DATABASE_URL is not set (run `taskstream up` for embedded Postgres)")
        return self.database_url.get_secret_value()

    @classmethod
    def env_names(cls) -> set[str]:
        """Every environment variable this class reads (for the docker-compose check)."""
        return {env for name in cls.model_fields for env in cls.env_names_of(name)}

    @classmethod
    def env_names_of(cls, name: str) -> list[str]:
        """The environment variables a field is read from."""
        alias = cls.model_fields[name].validation_alias
        if isinstance(alias, AliasChoices):
            return [str(a) for a in alias.choices]
        return [f"TASKSTREAM_{name.upper()}"]
