"""The local diffusion executor: GENERATION on a diffusers pipeline from the model registry.

Text-to-image with `prompt`, `width`, `height`, `seed`, `config.num_inference_steps` and
`config.guidance_scale`; image-to-image when `reference_image_url` or `reference_image_data`
is given, with `reference_image_strength` (0-100, how far the result may move away from
the reference). The same model, seed and inputs give the same PNG bytes.

Pipelines load once per process (`from_pretrained(..., local_files_only=True)`) and are
reused; the image-to-image pipeline shares the text-to-image one's modules. A cancel stops
the denoising loop at the next step (`callback_on_step_end` sets the pipeline's interrupt)
and nothing is stored. Progress is reported per step; the runner throttles it.
"""

from __future__ import annotations

import io
import json
import logging
import random
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu.executors import JobCancelled, JobContext
from gpu.images import FetchPolicy, load_image
from gpu.models import ModelRegistry
from state.storage import Storage, task_folder
from streams.records import InferenceJob, TrainingJob

logger = logging.getLogger(__name__)

DEFAULT_SIZE = 64
DEFAULT_STEPS = 10
DEFAULT_GUIDANCE = 7.5
MAX_STEPS = 200


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


_PENDING: Any = object()


class DiffusionExecutor:
    def __init__(
        self,
        registry: ModelRegistry,
        storage: Storage,
        fetch: FetchPolicy | None = None,
        max_pixels: int = 1024 * 1024,
        device: str | None = None,
    ) -> None:
        import torch

        self._registry = registry
        self._storage = storage
        self._fetch = fetch or FetchPolicy()
        self._max_pixels = max_pixels
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self._pipelines: dict[tuple[Path, str], Any] = {}
        self._lock = threading.Lock()

    def __call__(self, job: InferenceJob | TrainingJob, ctx: JobContext) -> dict:
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
        return (plan.model_dir, plan.width, plan.height, plan.steps, plan.guidance)

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
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            key = f"{task_folder(plan.job.task_type, plan.job.task_id)}/result.png"
            self._storage.put(key, buf.getvalue())
            outcomes[i] = {
                "executor_type": "local",
                "result_image_path": key,
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
            raise ValueError(f"the local executor cannot run {job.task_type} tasks yet")
        payload = json.loads(job.payload_json)
        width = int(payload.get("width") or DEFAULT_SIZE)
        height = int(payload.get("height") or DEFAULT_SIZE)
        if width % 8 or height % 8:
            raise ValueError(f"width and height must be multiples of 8, got {width}x{height}")
        if width * height > self._max_pixels:
            raise ValueError(f"{width}x{height} is over this worker's {self._max_pixels} pixels")
        config = payload.get("config") or {}
        steps = int(config.get("num_inference_steps") or DEFAULT_STEPS)
        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"config.num_inference_steps must be 1 to {MAX_STEPS}")
        guidance = float(config.get("guidance_scale", DEFAULT_GUIDANCE))
        seed = payload.get("seed")
        if seed is None:  # chosen here and reported, so the result can be reproduced
            seed = random.SystemRandom().randrange(2**32)
        return _Plan(
            job=job,
            prompt=payload["prompt"],
            width=width,
            height=height,
            steps=steps,
            guidance=guidance,
            seed=int(seed),
            model_dir=self._registry.pipeline_dir(payload.get("base_model_path") or job.model),
            reference=payload.get("reference_image_url") or payload.get("reference_image_data"),
            strength=float(payload.get("reference_image_strength", 50.0)) / 100,
        )

    def _render(self, plans: list[_Plan], contexts: list[JobContext]) -> list[Any]:
        """Run one pipeline call for `plans` (all alike but for prompt and seed)."""
        import torch

        first = plans[0]
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
            kwargs |= {"image": image.resize((first.width, first.height)), "strength": strength}
            pipeline = self._pipeline(first.model_dir, "img2img")
            total = max(1, int(first.steps * strength))
        else:
            kwargs |= {"width": first.width, "height": first.height}
            pipeline = self._pipeline(first.model_dir, "txt2img")
            total = first.steps

        def on_step(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            if all(ctx.should_stop() for ctx in contexts):
                pipe._interrupt = True  # diffusers' documented way to stop the loop
            for ctx in contexts:
                ctx.progress(min(99.0, 100.0 * (step + 1) / total))
            return tensors

        with torch.inference_mode():
            return pipeline(**kwargs, callback_on_step_end=on_step).images

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
                    model_dir, local_files_only=True, torch_dtype=self.dtype
                ).to(self.device)
                base.set_progress_bar_config(disable=True)
                self._pipelines[(model_dir, "txt2img")] = base
            if kind == "img2img":
                img2img = StableDiffusionImg2ImgPipeline(**base.components)
                img2img.set_progress_bar_config(disable=True)
                self._pipelines[(model_dir, kind)] = img2img
            return self._pipelines[(model_dir, kind)]
