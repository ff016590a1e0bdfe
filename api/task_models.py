"""HTTP shapes of Sartiq tasks: `Create*Task`, `*TaskPublic` and `*PublicUpdate` for all
eleven task types (seed 004, inventory §2.6), chosen by `task_type`.

The seed renders only GENERATION in full; the other types follow its compact tables.
Where the seed is silent on constraints we add the ones a client would expect (sizes,
strengths, weights in range) and say so in the field description.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from api.field_types import STRICT, Count32, Int32, JsonObject, JsonValue, WebhookUrl
from streams.records import ErrorCategory, TaskStatus


class TaskType(StrEnum):
    GENERATION = "GENERATION"
    EDITING = "EDITING"
    REFINE = "REFINE"
    EXPERIMENTAL_FAL = "EXPERIMENTAL_FAL"
    VIDEO_GENERATION = "VIDEO_GENERATION"
    LLM_INTERACTION = "LLM_INTERACTION"
    BACKGROUND_REMOVAL = "BACKGROUND_REMOVAL"
    DETAIL_ENHANCER = "DETAIL_ENHANCER"
    BACKGROUND_FIX = "BACKGROUND_FIX"
    IMAGE_ADJUSTER = "IMAGE_ADJUSTER"
    FACE_ENHANCER = "FACE_ENHANCER"


Size = Annotated[int, Field(ge=8, le=8192, description="Pixels (8-8192).")]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
LoraWeight = Annotated[float, Field(ge=-4.0, le=4.0)]
Percent = Annotated[float, Field(ge=0.0, le=100.0)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Image = Annotated[
    str,
    Field(min_length=1, description="base64, a data URL, an http(s) URL or a storage path."),
]


class _Strict(BaseModel):
    model_config = STRICT


# --- create ------------------------------------------------------------------------------


class _CreateBase(_Strict):
    priority: Int32 = Field(0, description="Higher runs first (a 32-bit integer).")
    config: JsonObject | None = Field(None, description="Flexible configuration storage")
    origin_instance: str = Field(
        "unknown", max_length=255, description="Identifier for the instance that created this task"
    )
    origin_zone: str | None = Field(None, max_length=64, description="e.g. 'eu', 'us'")
    origin_tenant_id: str | None = Field(
        None, max_length=255, description="Tenant; user tokens always create in their own tenant."
    )
    origin_reference: str | None = Field(None, max_length=1024)
    webhook_url: WebhookUrl | None = None
    provider_type: str | None = Field(
        None, max_length=64, description="Executor to run on; the local one when unset."
    )
    provider_config: JsonValue | None = None
    queue_name: str | None = Field(
        None,
        max_length=128,
        description="Optional queue override. If not specified, determined by provider_type"
        " (the default queue 'inference' unless the installation routes the provider elsewhere).",
    )
    active_provider_capabilities: list[str] | None = None
    fallback_provider_type: str | None = Field(None, max_length=64)
    fallback_provider_config: JsonValue | None = None
    fallback_provider_capabilities: list[str] | None = None


class _LoraFields(BaseModel):
    subject_model_path: str | None = None
    product_model_path: str | None = None
    style_model_path: str | None = None
    product2_model_path: str | None = None
    subject_lora_weight: LoraWeight | None = None
    product_lora_weight: LoraWeight | None = None
    style_lora_weight: LoraWeight | None = None
    product2_lora_weight: LoraWeight | None = None


class CreateGenerationTask(_CreateBase, _LoraFields):
    task_type: Literal[TaskType.GENERATION] = TaskType.GENERATION
    prompt: str = Field(..., min_length=1, max_length=4000, description="Task prompt")
    width: Size | None = None
    height: Size | None = None
    seed: Seed | None = None
    fal_app_id: str | None = None
    reference_image_data: str | None = Field(None, description="data:image/...;base64,... image")
    reference_image_url: str | None = None
    reference_image_strength: Percent | None = None


class CreateEditingTask(_CreateBase):
    task_type: Literal[TaskType.EDITING] = TaskType.EDITING
    prompt: str = Field(..., min_length=1, max_length=4000)
    base_image: Image | None = None
    reference_images: list[Image] | None = None
    width: Size | None = None
    height: Size | None = None
    seed: Seed | None = None
    fal_app_id: str | None = None
    workflow_id: str | None = None
    base_image_data: str | None = Field(None, deprecated=True, description="Use base_image.")
    base_image_url: str | None = Field(None, deprecated=True, description="Use base_image.")
    reference_image_data: str | None = Field(
        None, deprecated=True, description="Use reference_images."
    )
    reference_image_url: str | None = Field(
        None, deprecated=True, description="Use reference_images."
    )


class CreateRefineTask(_CreateBase):
    task_type: Literal[TaskType.REFINE] = TaskType.REFINE
    base_image_url: Image
    upscale_enabled: bool = True
    upscale_factor: float | None = Field(None, gt=1.0, le=8.0)
    upscale_prompt: str | None = None
    upscale_seed: Seed | None = None
    upscale_steps: int | None = Field(None, ge=1, le=200)
    upscale_denoise: Unit | None = None
    face_detail_enabled: bool = False
    face_detail_prompt: str | None = None
    face_detail_seed: Seed | None = None
    face_detail_steps: int | None = Field(None, ge=1, le=200)
    face_detail_denoise: Unit | None = None
    target_width: Size | None = None
    target_height: Size | None = None
    fal_app_id: str | None = None

    def required_capability(self) -> str:
        """F33: UPSCALE_{2,4,8}X for those factors, UPSCALE_FLOAT for any other factor,
        OUTPUT_SIZE when the size comes from target_width/target_height."""
        factor = self.upscale_factor
        if factor is None:
            return "OUTPUT_SIZE"
        if factor in (2, 4, 8):
            return f"UPSCALE_{int(factor)}X"
        return "UPSCALE_FLOAT"

    @model_validator(mode="after")
    def _capabilities(self) -> CreateRefineTask:
        if (
            self.upscale_enabled
            and self.upscale_factor is None
            and self.target_width is None
            and self.target_height is None
        ):
            raise ValueError("an upscale needs upscale_factor or target_width/target_height")
        needed = self.required_capability()
        offered = self.active_provider_capabilities
        if self.upscale_enabled and offered is not None and needed not in offered:
            raise ValueError(
                f"this refine needs capability {needed}; active_provider_capabilities"
                f" offers {sorted(offered)}"
            )
        return self


class CreateExperimentalFalTask(_CreateBase):
    task_type: Literal[TaskType.EXPERIMENTAL_FAL] = TaskType.EXPERIMENTAL_FAL
    fal_app_id: str = Field(..., min_length=1)
    fal_parameters: JsonObject | None = None


class CreateVideoGenerationTask(_CreateBase):
    task_type: Literal[TaskType.VIDEO_GENERATION] = TaskType.VIDEO_GENERATION
    prompt: str = Field(..., min_length=1, max_length=4000)
    negative_prompt: str | None = None
    input_image_url: str | None = None
    input_image_data: str | None = None
    duration_seconds: int = Field(5, ge=1, le=60)
    cfg_scale: float | None = Field(None, ge=0.0, le=2.0)


class CreateLLMInteractionTask(_CreateBase):
    task_type: Literal[TaskType.LLM_INTERACTION] = TaskType.LLM_INTERACTION
    prompt: str = Field(..., min_length=1)
    system_prompt: str | None = None
    input_images: list[Image] | None = None


class CreateBackgroundRemovalTask(_CreateBase):
    task_type: Literal[TaskType.BACKGROUND_REMOVAL] = TaskType.BACKGROUND_REMOVAL
    input_image_paths: list[Image] = Field(..., min_length=1, max_length=100)


class CreateDetailEnhancerTask(_CreateBase):
    task_type: Literal[TaskType.DETAIL_ENHANCER] = TaskType.DETAIL_ENHANCER
    base_image: Image
    reference_image: Image
    detail_label: str | None = None


class CreateBackgroundFixTask(_CreateBase):
    task_type: Literal[TaskType.BACKGROUND_FIX] = TaskType.BACKGROUND_FIX
    base_image: Image
    palette_image: Image
    strategy: str | None = None
    edge_blur_sigma: float = Field(20.0, ge=0.0)
    light_threshold: float = Field(220.0, ge=0.0, le=255.0)
    shadow_threshold: float = Field(150.0, ge=0.0, le=255.0)
    mask_expansion_percentage: Unit = 0.005


class CreateImageAdjusterTask(_CreateBase):
    task_type: Literal[TaskType.IMAGE_ADJUSTER] = TaskType.IMAGE_ADJUSTER
    input_image: Image
    mode: Literal["auto", "crop", "pad", "scale"] = "auto"
    aspect_ratio: float | None = Field(None, gt=0.0)
    target_width: Size | None = None
    target_height: Size | None = None
    cropping_position: str | None = None
    margin_top: Unit | None = None
    margin_bottom: Unit | None = None
    margin_left: Unit | None = None
    margin_right: Unit | None = None
    reference_image: Image | None = None
    resampling: str | None = None
    scaling_proportions: str | None = None
    tolerance: Unit = 0.0


class CreateFaceEnhancerTask(_CreateBase):
    task_type: Literal[TaskType.FACE_ENHANCER] = TaskType.FACE_ENHANCER
    input_image: Image


CreateTaskBody = Annotated[
    CreateGenerationTask
    | CreateEditingTask
    | CreateRefineTask
    | CreateExperimentalFalTask
    | CreateVideoGenerationTask
    | CreateLLMInteractionTask
    | CreateBackgroundRemovalTask
    | CreateDetailEnhancerTask
    | CreateBackgroundFixTask
    | CreateImageAdjusterTask
    | CreateFaceEnhancerTask,
    Field(discriminator="task_type"),
]
CREATE_BODY = TypeAdapter(CreateTaskBody)


# --- public ------------------------------------------------------------------------------


class _PublicBase(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: UUID
    task_type: TaskType
    status: TaskStatus
    priority: int = 0
    progress: float = 0.0
    retry_count: int = 0
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    config: dict[str, Any] | None = None
    origin_instance: str = "unknown"
    origin_zone: str | None = None
    origin_tenant_id: str | None = None
    origin_reference: str | None = None
    executor_type: str | None = None
    executor_instance: str | None = None
    celery_task_id: str | None = None
    service_task_id: str | None = None
    provider_type: str | None = None
    provider_config: Any | None = None
    active_provider_capabilities: list[str] | None = None
    fallback_provider_type: str | None = None
    fallback_provider_config: Any | None = None
    fallback_provider_capabilities: list[str] | None = None
    errors: list[str] | None = None
    error_category: ErrorCategory | None = None


class GenerationTaskPublic(_PublicBase, _LoraFields):
    task_type: Literal[TaskType.GENERATION] = TaskType.GENERATION
    workflow_id: str | None = None
    prompt: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    result_image_path: str | None = None
    reference_image_path: str | None = None
    reference_image_strength: float | None = None
    fal_app_id: str | None = None
    fal_request_id: str | None = None


class EditingTaskPublic(_PublicBase):
    task_type: Literal[TaskType.EDITING] = TaskType.EDITING
    prompt: str | None = None
    base_image_path: str | None = None
    reference_images: list[str] | None = None
    reference_image_path: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    result_image_path: str | None = None
    workflow_id: str | None = None
    fal_app_id: str | None = None
    fal_request_id: str | None = None


class RefineTaskPublic(_PublicBase):
    task_type: Literal[TaskType.REFINE] = TaskType.REFINE
    upscale_factor: float | None = None
    upscale_seed: int | None = None
    upscale_steps: int | None = None
    upscale_denoise: float | None = None
    face_detail_seed: int | None = None
    face_detail_steps: int | None = None
    face_detail_denoise: float | None = None
    target_width: int | None = None
    target_height: int | None = None
    result_image_path: str | None = None
    faces_detected: int | None = Field(None, description="Faces the face-detail stage re-rendered")
    fal_app_id: str | None = None
    fal_request_id: str | None = None


class ExperimentalFalTaskPublic(_PublicBase):
    task_type: Literal[TaskType.EXPERIMENTAL_FAL] = TaskType.EXPERIMENTAL_FAL
    fal_app_id: str | None = None
    fal_parameters: dict[str, Any] | None = None
    fal_request_id: str | None = None
    result_url: str | None = None


class VideoGenerationTaskPublic(_PublicBase):
    task_type: Literal[TaskType.VIDEO_GENERATION] = TaskType.VIDEO_GENERATION
    prompt: str | None = None
    negative_prompt: str | None = None
    input_image_path: str | None = None
    duration_seconds: int | None = None
    cfg_scale: float | None = None
    result_video_path: str | None = None


class LLMInteractionTaskPublic(_PublicBase):
    task_type: Literal[TaskType.LLM_INTERACTION] = TaskType.LLM_INTERACTION
    prompt: str | None = None
    system_prompt: str | None = None
    input_images: list[str] | None = None
    result_text: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


class BackgroundRemovalTaskPublic(_PublicBase):
    task_type: Literal[TaskType.BACKGROUND_REMOVAL] = TaskType.BACKGROUND_REMOVAL
    input_image_paths: list[str] | None = None
    result_image_paths: list[str] | None = None


class DetailEnhancerTaskPublic(_PublicBase):
    task_type: Literal[TaskType.DETAIL_ENHANCER] = TaskType.DETAIL_ENHANCER
    base_image_path: str | None = None
    reference_image_path: str | None = None
    detail_label: str | None = None
    result_image_path: str | None = None
    fallback_used: bool | None = None


class BackgroundFixTaskPublic(_PublicBase):
    task_type: Literal[TaskType.BACKGROUND_FIX] = TaskType.BACKGROUND_FIX
    base_image_path: str | None = None
    palette_image_path: str | None = None
    strategy: str | None = None
    edge_blur_sigma: float | None = None
    light_threshold: float | None = None
    shadow_threshold: float | None = None
    mask_expansion_percentage: float | None = None
    result_image_path: str | None = None


class ImageAdjusterTaskPublic(_PublicBase):
    task_type: Literal[TaskType.IMAGE_ADJUSTER] = TaskType.IMAGE_ADJUSTER
    input_image_path: str | None = None
    mode: str | None = None
    aspect_ratio: float | None = None
    target_width: int | None = None
    target_height: int | None = None
    cropping_position: str | None = None
    margin_top: float | None = None
    margin_bottom: float | None = None
    margin_left: float | None = None
    margin_right: float | None = None
    reference_image_path: str | None = None
    resampling: str | None = None
    scaling_proportions: str | None = None
    tolerance: float | None = None
    result_image_path: str | None = None


class FaceEnhancerTaskPublic(_PublicBase):
    task_type: Literal[TaskType.FACE_ENHANCER] = TaskType.FACE_ENHANCER
    input_image_path: str | None = None
    result_image_path: str | None = None
    face_detected: bool | None = None
    attempts_used: int | None = None
    fallback_used: bool | None = None
    final_ssim_score: float | None = None
    final_lpips_score: float | None = None
    final_dists_score: float | None = None


TaskPublic = Annotated[
    GenerationTaskPublic
    | EditingTaskPublic
    | RefineTaskPublic
    | ExperimentalFalTaskPublic
    | VideoGenerationTaskPublic
    | LLMInteractionTaskPublic
    | BackgroundRemovalTaskPublic
    | DetailEnhancerTaskPublic
    | BackgroundFixTaskPublic
    | ImageAdjusterTaskPublic
    | FaceEnhancerTaskPublic,
    Field(discriminator="task_type"),
]
TASK_PUBLIC = TypeAdapter(TaskPublic)

# Where a create field's value is shown under another name in the Public shape.
PUBLIC_ALIASES = {
    "reference_image_url": "reference_image_path",
    "base_image": "base_image_path",
    "base_image_url": "base_image_path",
    "palette_image": "palette_image_path",
    "input_image": "input_image_path",
    "input_image_url": "input_image_path",
    "reference_image": "reference_image_path",
}


# --- update ------------------------------------------------------------------------------


class TaskPublicUpdate(_Strict):
    """What PUT /api/v1/tasks/{id} may change for most task types (all optional)."""

    status: TaskStatus | None = None
    priority: Int32 | None = None
    config: JsonObject | None = None
    errors: list[str] | None = None
    executor_type: str | None = None
    executor_instance: str | None = None

    @field_validator(
        "status", "priority", "progress", "retry_count", mode="before", check_fields=False
    )
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        """Nullable in the seed, but a task always has these: null cannot mean a value."""
        if value is None:
            raise PydanticCustomError(
                "null_value",
                "{name} cannot be null; leave it out to keep it",
                {"name": info.field_name},
            )
        return value


class ExperimentalFalTaskPublicUpdate(TaskPublicUpdate):
    fal_app_id: str | None = None
    fal_parameters: JsonObject | None = None


class _WorkerUpdate(TaskPublicUpdate):
    """The broad "worker" update (LLMInteractionTaskPublicUpdate, base of GenerationTaskUpdate)."""

    origin_instance: str | None = None
    origin_zone: str | None = None
    origin_tenant_id: str | None = None
    origin_reference: str | None = None
    celery_task_id: str | None = None
    service_task_id: str | None = None
    retry_count: Count32 | None = None
    progress: Percent | None = None
    is_resumed: bool | None = None
    provider_type: str | None = None
    active_provider_capabilities: list[str] | None = None
    queue_name: str | None = None
    fallback_provider_type: str | None = None
    fallback_provider_config: JsonValue | None = None
    fallback_provider_capabilities: list[str] | None = None
    resume_attempt_count: Count32 | None = None
    last_resume_attempt: datetime | None = None
    error_category: ErrorCategory | None = None
    service_requests: list[JsonObject] | None = None


class LLMInteractionTaskPublicUpdate(_WorkerUpdate):
    pass


class GenerationTaskUpdate(_WorkerUpdate, _LoraFields):
    model_config = STRICT
    fal_app_id: str | None = None
    fal_request_id: str | None = None
    reference_image_path: str | None = None
    reference_image_strength: Percent | None = None
    result_image_path: str | None = None


UPDATE_MODELS: dict[TaskType, type[TaskPublicUpdate]] = {
    **{t: TaskPublicUpdate for t in TaskType},
    TaskType.EXPERIMENTAL_FAL: ExperimentalFalTaskPublicUpdate,
    TaskType.LLM_INTERACTION: LLMInteractionTaskPublicUpdate,
}
