"""The local diffusion executor: GENERATION, EDITING and REFINE on diffusers pipelines.

Every task may name its pipeline in `config.base_model_path` (a model registry name, e.g. a
FULL training's `local_model_path`); the default model otherwise.

GENERATION: text-to-image with `prompt`, `width`, `height`, `seed`,
`config.num_inference_steps` and `config.guidance_scale`; image-to-image when
`reference_image_url` or `reference_image_data` is given, with `reference_image_strength`
(0-100, how far the result may move away from the reference). EDITING: an image-to-image
edit of `base_image` conditioned on `reference_images` (see `_edit`). REFINE: Lanczos upscale
by `upscale_factor` or to a target size, optionally refined by diffusion (see `_refine`).
Every image input accepts base64, a data URL, an http(s) URL or a storage path.

The same model, seed and inputs give the same PNG bytes. Pipelines load once per process
(`from_pretrained(..., local_files_only=True)`) and are reused; the image-to-image pipeline
shares the text-to-image one's modules. A cancel stops the denoising loop at the next step
(`callback_on_step_end` sets the pipeline's interrupt) and nothing is stored. Progress is
reported per step; the runner throttles it. Text-to-image jobs alike but for prompt and
seed can run as one batched call (`batch_key`, `run_batch`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import random
import threading
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu.executors import JobCancelled, JobContext
from gpu.faces import FaceDetector, haar_faces
from gpu.images import FetchPolicy, load_image
from gpu.models import ModelRegistry, render_size
from state.storage import Storage, task_folder
from streams.records import InferenceJob, TrainingJob

logger = logging.getLogger(__name__)

DEFAULT_SIZE = 64
DEFAULT_STEPS = 10
DEFAULT_GUIDANCE = 7.5
MAX_STEPS = 200
MAX_GUIDANCE = 100.0
#: Task field prefixes naming LoRAs: `<slot>_model_path` and `<slot>_lora_weight`.
LORA_SLOTS = ("subject", "product", "style", "product2")


@dataclass(frozen=True)
class _Plan:
    job: InferenceJob
    prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    model_dir: Path
    reference: str | None
    strength: float
    loras: tuple[tuple[str, Path, float], ...] = ()  # (slot, file, weight)


_PENDING: Any = object()


def model_name(payload: dict) -> str | None:
    """The pipeline a task asks for: `config.base_model_path` (the seed's task bodies have
    no model field; their `config` is the flexible place), or None for the default."""
    return (payload.get("config") or {}).get("base_model_path") or payload.get("base_model_path")


class DiffusionExecutor:
    def __init__(
        self,
        registry: ModelRegistry,
        storage: Storage,
        fetch: FetchPolicy | None = None,
        max_pixels: int = 1024 * 1024,
        device: str | None = None,
        faces: FaceDetector = haar_faces,
    ) -> None:
        import torch

        self._registry = registry
        self._storage = storage
        self._fetch = fetch or FetchPolicy()
        self._max_pixels = max_pixels
        self._faces = faces
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self._pipelines: dict[tuple[Path, str], Any] = {}
        self._lock = threading.Lock()

    def __call__(self, job: InferenceJob | TrainingJob, ctx: JobContext) -> dict:
        if isinstance(job, InferenceJob) and job.task_type == "EDITING":
            return self._edit(job, json.loads(job.payload_json), ctx)
        if isinstance(job, InferenceJob) and job.task_type == "REFINE":
            return self._refine(job, json.loads(job.payload_json), ctx)
        outcome = self.run_batch([job], [ctx])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def batch_key(self, job: InferenceJob | TrainingJob) -> Hashable | None:
        """Text-to-image jobs with the same model, size, steps and guidance batch together."""
        try:
            plan = self._plan(job)
        except ValueError:
            return None
        if plan.reference is not None:
            return None
        return (plan.model_dir, plan.width, plan.height, plan.steps, plan.guidance, plan.loras)

    def run_batch(
        self, jobs: list[InferenceJob | TrainingJob], contexts: list[JobContext]
    ) -> list[dict | BaseException]:
        """One pipeline call for `jobs` (same `batch_key`, or a single job), each with its own
        generator; one result or exception per job, in order."""
        outcomes: list[dict | BaseException] = []
        plans: list[_Plan] = []
        for job in jobs:
            try:
                plans.append(self._plan(job))
                outcomes.append(_PENDING)
            except ValueError as exc:
                outcomes.append(exc)
        live = [i for i, o in enumerate(outcomes) if o is _PENDING]
        if not live:
            return outcomes
        batch = plans  # the jobs whose plan held, in the order of `live`
        ctxs = [contexts[i] for i in live]
        try:
            images = self._render(batch, ctxs)
        except ValueError as exc:
            for i in live:
                outcomes[i] = exc
            return outcomes
        for i, plan, ctx, image in zip(live, batch, ctxs, images, strict=True):
            if ctx.should_stop():
                outcomes[i] = JobCancelled(f"task {plan.job.task_id} was cancelled while rendering")
                continue
            outcomes[i] = {
                "executor_type": "local",
                "result_image_path": self._store(plan.job, "result", image),
                "seed": plan.seed,
                "width": image.width,
                "height": image.height,
            }
        return outcomes

    # --- planning and rendering --------------------------------------------------------

    def _plan(self, job: InferenceJob | TrainingJob) -> _Plan:
        """Validate a job's inputs into a render plan (ValueError says what is wrong)."""
        if not isinstance(job, InferenceJob):
            raise ValueError("the diffusion executor runs inference jobs only")
        if job.task_type != "GENERATION":
            raise ValueError(
                f"the local executor runs GENERATION, EDITING and REFINE, not {job.task_type}"
            )
        payload = json.loads(job.payload_json)
        width, height = self._size(payload, (DEFAULT_SIZE, DEFAULT_SIZE))
        config = payload.get("config") or {}
        steps = _setting(config, "num_inference_steps", DEFAULT_STEPS, 1, MAX_STEPS, int)
        guidance = _setting(config, "guidance_scale", DEFAULT_GUIDANCE, 0, MAX_GUIDANCE)
        seed = _seed(payload.get("seed"))
        return _Plan(
            job=job,
            prompt=payload["prompt"],
            width=width,
            height=height,
            steps=steps,
            guidance=guidance,
            seed=int(seed),
            model_dir=self._registry.pipeline_dir(model_name(payload) or job.model),
            reference=payload.get("reference_image_url") or payload.get("reference_image_data"),
            strength=float(payload.get("reference_image_strength", 50.0)) / 100,
            loras=self._lora_set(payload),
        )

    def _lora_set(self, payload: dict) -> tuple[tuple[str, Path, float], ...]:
        """The LoRAs a task names in `<slot>_model_path`, with `<slot>_lora_weight` (1.0)."""
        chosen = []
        for slot in LORA_SLOTS:
            name = payload.get(f"{slot}_model_path")
            if name:
                weight = payload.get(f"{slot}_lora_weight")
                chosen.append(
                    (slot, self._registry.lora_file(name), 1.0 if weight is None else float(weight))
                )
        return tuple(chosen)

    @contextlib.contextmanager
    def _loras_attached(
        self, pipeline: Any, loras: tuple[tuple[str, Path, float], ...]
    ) -> Iterator[None]:
        """Attach LoRAs for one call and remove them after, whatever happens."""
        if not loras:
            yield
            return
        try:
            for slot, path, _ in loras:
                pipeline.load_lora_weights(
                    str(path.parent), weight_name=path.name, adapter_name=slot
                )
            pipeline.set_adapters(
                [slot for slot, _, _ in loras], adapter_weights=[w for _, _, w in loras]
            )
            yield
        finally:
            pipeline.unload_lora_weights()

    def _size(self, payload: dict, fallback: tuple[int, int]) -> tuple[int, int]:
        width = int(payload.get("width") or fallback[0])
        height = int(payload.get("height") or fallback[1])
        if width % 8 or height % 8:
            raise ValueError(f"width and height must be multiples of 8, got {width}x{height}")
        if width * height > self._max_pixels:
            raise ValueError(f"{width}x{height} is over this worker's {self._max_pixels} pixels")
        return width, height

    def _store(self, job: InferenceJob, name: str, image: Any) -> str:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        key = f"{task_folder(job.task_type, job.task_id)}/{name}.png"
        self._storage.put(key, buf.getvalue())
        return key

    def _img2img(
        self,
        job: InferenceJob,
        model: str | None,
        image: Any,
        prompt: str,
        steps: int,
        strength: float,
        seed: int,
        ctx: JobContext,
        guidance: float = DEFAULT_GUIDANCE,
    ) -> Any:
        """One image-to-image pass on `image` (whose size is a multiple of 8), at the model's
        render size (`render_size`) and back."""
        import torch
        from PIL import Image as PILImage

        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be 1 to {MAX_STEPS}")
        strength = min(1.0, max(strength, 1.0 / steps))  # at least one denoising step
        total = max(1, int(steps * strength))
        model_dir = self._registry.pipeline_dir(model or job.model)
        pipeline = self._pipeline(model_dir, "img2img")
        size = image.size
        work = render_size(model_dir, *size)

        def on_step(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            if ctx.should_stop():
                pipe._interrupt = True
            ctx.progress(min(99.0, 100.0 * (step + 1) / total))
            return tensors

        with torch.inference_mode():
            result = pipeline(
                prompt=prompt,
                image=image.resize(work, PILImage.Resampling.LANCZOS),
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator(device="cpu").manual_seed(seed),
                callback_on_step_end=on_step,
            ).images[0]
        if ctx.should_stop():
            raise JobCancelled(f"task {job.task_id} was cancelled during denoising")
        return result.resize(size, PILImage.Resampling.LANCZOS) if work != size else result

    # --- EDITING -----------------------------------------------------------------------

    def _edit(self, job: InferenceJob, payload: dict, ctx: JobContext) -> dict:
        """Edit `base_image` toward `prompt`, conditioned on `reference_images`.

        The built-in model has no image encoder, so references condition the edit through
        the starting point: their mean is blended into the base image with weight
        `config.reference_weight` (default 0.3) before an image-to-image pass of strength
        `config.strength` (default 0.6). The deprecated `base_image_data`/`base_image_url`
        and `reference_image_data`/`reference_image_url` fill in for the new fields.
        """
        from PIL import Image as PILImage

        base_ref = (
            payload.get("base_image")
            or payload.get("base_image_url")
            or payload.get("base_image_data")
        )
        if not base_ref:
            raise ValueError("EDITING needs base_image")
        refs = payload.get("reference_images") or [
            r
            for r in (payload.get("reference_image_url"), payload.get("reference_image_data"))
            if r
        ]
        base = load_image(base_ref, self._storage, self._fetch)
        width, height = self._size(payload, (base.width // 8 * 8 or 8, base.height // 8 * 8 or 8))
        base = base.resize((width, height))
        references = [
            load_image(r, self._storage, self._fetch).resize((width, height)) for r in refs
        ]
        config = payload.get("config") or {}
        start = base
        if references:
            import numpy as np

            weight = _setting(config, "reference_weight", 0.3, 0, 1)
            mean = np.mean([np.asarray(r, dtype=np.float32) for r in references], axis=0)
            mixed = (1 - weight) * np.asarray(base, dtype=np.float32) + weight * mean
            start = PILImage.fromarray(mixed.round().clip(0, 255).astype("uint8"))
        seed = _seed(payload.get("seed"))
        result = self._img2img(
            job,
            model_name(payload),
            start,
            payload["prompt"],
            _setting(config, "num_inference_steps", DEFAULT_STEPS, 1, MAX_STEPS, int),
            _setting(config, "strength", 0.6, 0, 1),
            seed,
            ctx,
            _setting(config, "guidance_scale", DEFAULT_GUIDANCE, 0, MAX_GUIDANCE),
        )
        return {
            "executor_type": "local",
            "base_image_path": self._store(job, "base", base),
            "reference_images": [
                self._store(job, f"reference_{i}", r) for i, r in enumerate(references)
            ],
            "result_image_path": self._store(job, "result", result),
            "seed": seed,
            "width": width,
            "height": height,
        }

    # --- REFINE ------------------------------------------------------------------------

    def _refine(self, job: InferenceJob, payload: dict, ctx: JobContext) -> dict:
        """Upscale by `upscale_factor` (or to `target_width`/`target_height`) with Lanczos,
        then, when `upscale_steps` or `upscale_denoise` is given, refine the upscaled image
        with an image-to-image pass of strength `upscale_denoise` (default 0.3); with
        `face_detail_enabled`, re-render each detected face (`_face_detail`)."""
        from PIL import Image as PILImage

        image = load_image(payload["base_image_url"], self._storage, self._fetch)
        width, height = image.size
        factor = payload.get("upscale_factor")
        if payload.get("upscale_enabled", True):
            if factor:
                width, height = round(width * factor), round(height * factor)
            else:
                tw, th = payload.get("target_width"), payload.get("target_height")
                if not tw and not th:
                    raise ValueError("REFINE needs upscale_factor or target_width/target_height")
                width, height = tw or round(width * th / height), th or round(height * tw / width)
        if width * height > self._max_pixels:
            raise ValueError(f"{width}x{height} is over this worker's {self._max_pixels} pixels")
        result = image.resize((width, height), PILImage.Resampling.LANCZOS)
        refined = payload.get("upscale_steps") or payload.get("upscale_denoise")
        seed = _seed(payload.get("upscale_seed"))
        if refined:
            # the pipeline works on multiples of 8: refine at the nearest such size, then back
            work = result.resize((max(8, width // 8 * 8), max(8, height // 8 * 8)))
            work = self._img2img(
                job,
                model_name(payload),
                work,
                payload.get("upscale_prompt") or "",
                int(payload.get("upscale_steps") or DEFAULT_STEPS),
                float(payload.get("upscale_denoise") or 0.3),
                seed,
                ctx,
            )
            result = work.resize((width, height), PILImage.Resampling.LANCZOS)
        elif ctx.should_stop():
            raise JobCancelled(f"task {job.task_id} was cancelled")
        faces = None
        if payload.get("face_detail_enabled"):
            result, faces = self._face_detail(job, payload, result, ctx)
        return {
            "executor_type": "local",
            "result_image_path": self._store(job, "result", result),
            "width": width,
            "height": height,
            **({"upscale_seed": seed} if refined else {}),
            **({"faces_detected": faces} if faces is not None else {}),
        }

    def _face_detail(
        self, job: InferenceJob, payload: dict, image: Any, ctx: JobContext
    ) -> tuple[Any, int]:
        """Re-render each detected face (with a 25% margin) by image-to-image at
        `face_detail_denoise` (default 0.4) and paste it back through a feathered mask."""
        from PIL import Image as PILImage
        from PIL import ImageDraw, ImageFilter

        boxes = self._faces(image)
        seed = _seed(payload.get("face_detail_seed"))
        out = image.copy()
        for x, y, w, h in boxes:
            mx, my = w // 4, h // 4
            left, top = max(0, x - mx), max(0, y - my)
            right, bottom = min(image.width, x + w + mx), min(image.height, y + h + my)
            crop = image.crop((left, top, right, bottom))
            side = min(512, max(64, max(crop.size) // 8 * 8))  # the pipeline's sizes: x8
            work = self._img2img(
                job,
                model_name(payload),
                crop.resize((side, side), PILImage.Resampling.LANCZOS),
                payload.get("face_detail_prompt") or "a detailed face",
                int(payload.get("face_detail_steps") or DEFAULT_STEPS),
                float(payload.get("face_detail_denoise") or 0.4),
                seed,
                ctx,
            ).resize(crop.size, PILImage.Resampling.LANCZOS)
            mask = PILImage.new("L", crop.size, 0)
            inset = max(1, min(crop.size) // 8)
            ImageDraw.Draw(mask).ellipse(
                (inset, inset, crop.width - inset, crop.height - inset), fill=255
            )
            out.paste(work, (left, top), mask.filter(ImageFilter.GaussianBlur(inset / 2)))
        return out, len(boxes)

    def _render(self, plans: list[_Plan], contexts: list[JobContext]) -> list[Any]:
        """Run one pipeline call for `plans` (all alike but for prompt and seed), at the
        model's render size (`render_size`), upscaling the images to the request after."""
        import torch
        from PIL import Image as PILImage

        first = plans[0]
        size = (first.width, first.height)
        work = render_size(first.model_dir, *size)
        kwargs: dict[str, Any] = {
            "prompt": [p.prompt for p in plans],
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            # one generator per image: each gets exactly the latents it would get alone
            "generator": [torch.Generator(device="cpu").manual_seed(p.seed) for p in plans],
            "output_type": "pil",
        }
        if first.reference is not None:
            if len(plans) > 1:
                raise ValueError("image-to-image jobs run one at a time")
            image = load_image(first.reference, self._storage, self._fetch)
            # at least one denoising step, or diffusers refuses the call
            strength = max(first.strength, 1.0 / first.steps)
            kwargs |= {
                "image": image.resize(work, PILImage.Resampling.LANCZOS),
                "strength": strength,
            }
            pipeline = self._pipeline(first.model_dir, "img2img")
            total = max(1, int(first.steps * strength))
        else:
            kwargs |= {"width": work[0], "height": work[1]}
            pipeline = self._pipeline(first.model_dir, "txt2img")
            total = first.steps

        def on_step(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            if all(ctx.should_stop() for ctx in contexts):
                pipe._interrupt = True  # diffusers' documented way to stop the loop
            for ctx in contexts:
                ctx.progress(min(99.0, 100.0 * (step + 1) / total))
            return tensors

        with self._loras_attached(pipeline, first.loras), torch.inference_mode():
            images = pipeline(**kwargs, callback_on_step_end=on_step).images
        if work == size:
            return images
        return [image.resize(size, PILImage.Resampling.LANCZOS) for image in images]

    # --- pipelines ---------------------------------------------------------------------

    def _pipeline(self, model_dir: Path, kind: str) -> Any:
        with self._lock:
            cached = self._pipelines.get((model_dir, kind))
            if cached is not None:
                return cached
            from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

            base = self._pipelines.get((model_dir, "txt2img"))
            if base is None:
                logger.info("loading pipeline %s on %s (%s)", model_dir, self.device, self.dtype)
                base = StableDiffusionPipeline.from_pretrained(
                    # safetensors only: a pickled checkpoint could run code on load
                    model_dir,
                    local_files_only=True,
                    torch_dtype=self.dtype,
                    use_safetensors=True,
                ).to(self.device)
                base.set_progress_bar_config(disable=True)
                self._pipelines[(model_dir, "txt2img")] = base
            if kind == "img2img":
                img2img = StableDiffusionImg2ImgPipeline(**base.components)
                img2img.set_progress_bar_config(disable=True)
                self._pipelines[(model_dir, kind)] = img2img
            return self._pipelines[(model_dir, kind)]


def _setting(
    config: dict, name: str, default: float, low: float, high: float, kind: type = float
) -> Any:
    """`config[name]` (`default` when absent or null) as `kind`, or a ValueError (the task
    fails with a VALIDATION error) when it is not a number from `low` to `high`: a value
    out of range is refused, not silently replaced or clamped."""
    value = config.get(name)
    if value is None:
        return kind(default)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not low <= value <= high or (kind is int and value != int(value)):
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"config.{name} must be {what} from {low:g} to {high:g}, not {value!r}")
    return kind(value)


def _seed(given: int | None) -> int:
    """The task's seed, or one chosen here (and reported, so the result can be reproduced)."""
    return int(given) if given is not None else random.SystemRandom().randrange(2**32)
