"""HTTP shapes of training tasks (seed 004, inventory §2.4): `TrainingTaskCreate` and the
`TrainingTask` view.

Every default of the seed applies, also when a field is sent as explicit `null` (the seed's
own example sends nulls meaning "the default"). The server-side settings (`save_every`,
`max_step_saves_to_keep`, `batch_size`, `gradient_accumulation`, `optimizer`,
`sample_every`, `sample_steps`) are not part of the seed's create body; this API accepts them
as optional extensions, with the seed's defaults, so a client can run a short training.

Training statuses (`TrainingStatus`), in order of a task's life:
PENDING (accepted, waiting for a training worker) -> PREPROCESSING (reading, validating,
transforming and captioning the source images) -> TRAINING (optimizer steps) -> COMPLETED;
or FAILED (with `error_message`) or CANCELLED (the worker stops at the next step boundary and
keeps the checkpoints written so far) from any earlier status.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

from api.field_types import STRICT, JsonObject, WebhookUrl


class TrainingStatus(StrEnum):
    PENDING = "PENDING"
    PREPROCESSING = "PREPROCESSING"
    TRAINING = "TRAINING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class TrainingType(StrEnum):
    LORA = "LORA"
    FULL = "FULL"


class EntityType(StrEnum):
    PRODUCT = "PRODUCT"
    SUBJECT = "SUBJECT"
    STYLE = "STYLE"


class CaptioningStrategy(StrEnum):
    TRIGGER_ONLY = "trigger_only"
    PROMPT = "prompt"


DEFAULT_BASE_MODEL = "black-forest-labs/FLUX.1-dev"

#: Settings of the seed's `TrainingTask` that its create body does not carry; the API adds
#: them to a training task's body.
TRAINING_SERVER_SIDE = {"optimizer": "adamw8bit", "priority": 1}


class TrainingTaskCreate(BaseModel):
    """Schema for creating new training tasks. Only `trigger_word` is required."""

    model_config = STRICT

    training_type: TrainingType = TrainingType.LORA
    entity_type: EntityType = EntityType.PRODUCT
    entity_id: UUID | None = None
    trigger_word: str = Field(..., min_length=1, max_length=64)
    rank: int = Field(16, ge=1, le=256)
    steps: int = Field(1000, ge=1, le=100_000)
    learning_rate: float = Field(1e-4, gt=0, lt=1)
    sample_prompts: list[str] = Field(default_factory=list, max_length=16)
    source_images: list[str] = Field(default_factory=list, max_length=100)
    base_model_path: str = Field(DEFAULT_BASE_MODEL, max_length=255)
    bypass_guidance_embedding: bool = False
    webhook_url: WebhookUrl | None = None
    origin_instance: str = Field("unknown", max_length=255)
    origin_zone: str | None = Field(None, max_length=64)
    origin_version: str | None = Field(None, max_length=64)
    origin_tenant_id: str | None = Field(None, max_length=255)
    preprocessing_transforms: list[JsonObject] | None = Field(None, max_length=16)
    preprocessing_captioning_strategy: CaptioningStrategy = CaptioningStrategy.TRIGGER_ONLY
    preprocessing_captioning_prompt: str | None = Field(None, max_length=1000)
    # server-side settings in the seed; optional here (see the module docstring)
    save_every: int = Field(
        2000, ge=1, le=100_000, description="Checkpoint every N steps (extension)."
    )
    max_step_saves_to_keep: int = Field(4, ge=1, le=100, description="Checkpoints kept.")
    batch_size: int = Field(1, ge=1, le=64)
    gradient_accumulation: int = Field(1, ge=1, le=64)
    sample_every: int = Field(
        250, ge=0, le=100_000, description="Sample every N steps; 0: at the end."
    )
    sample_steps: int = Field(25, ge=1, le=200)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class TrainingTask(BaseModel):
    """A training task as `GET /api/v1/training/{id}` shows it, live."""

    id: UUID
    created_at: datetime
    updated_at: datetime
    origin_instance: str = "unknown"
    origin_zone: str | None = None
    origin_version: str | None = None
    origin_tenant_id: str | None = None
    training_type: TrainingType = TrainingType.LORA
    entity_type: EntityType = EntityType.PRODUCT
    entity_id: UUID | None = None
    status: TrainingStatus = TrainingStatus.PENDING
    progress: float = 0.0
    current_step: int = 0
    total_steps: int = 1000
    eta_seconds: int | None = None
    trigger_word: str
    training_folder: str = ""
    rank: int = 16
    save_every: int = 2000
    max_step_saves_to_keep: int = 4
    batch_size: int = 1
    steps: int = 1000
    learning_rate: float = 1e-4
    gradient_accumulation: int = 1
    optimizer: str = "adamw8bit"
    bypass_guidance_embedding: bool = False
    base_model_path: str = DEFAULT_BASE_MODEL
    local_model_path: str | None = None
    sample_every: int = 250
    sample_steps: int = 25
    sample_prompts: list[str] = []
    started_at: datetime | None = None
    completed_at: datetime | None = None
    logs: str = ""
    error_message: str | None = None
    webhook_url: str = ""
    celery_training_task_id: str | None = None
    celery_preprocessing_task_id: str | None = None
    celery_chain_task_id: str | None = None
    preprocessing_stage: str | None = None
    processed_files_count: int | None = None
    total_files_count: int | None = None
    preprocessing_started_at: datetime | None = None
    preprocessing_completed_at: datetime | None = None
    source_images: list[str] = []
    processed_dataset_path: str | None = None
    preprocessing_transforms: list[dict[str, Any]] | None = None
    preprocessing_captioning_strategy: str = "trigger_only"
    preprocessing_captioning_prompt: str | None = None
    priority: int = 1
    priority_changed_at: datetime | None = None
    samples: list[str] = Field(default_factory=list, description="Stored sample images.")
    checkpoints: list[str] = Field(default_factory=list, description="Kept checkpoints.")
