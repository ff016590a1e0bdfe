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
        if not isinstance(job, InferenceJob):
            raise ValueError("the diffusion executor runs inference jobs only")
        payload = json.loads(job.payload_json)
        if job.task_type != "GENERATION":
            raise ValueError(f"the local executor cannot run {job.task_type} tasks yet")
        return self._generate(job, payload, ctx)

    # --- GENERATION --------------------------------------------------------------------

    def _generate(self, job: InferenceJob, payload: dict, ctx: JobContext) -> dict:
        import torch

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
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)
        reference = payload.get("reference_image_url") or payload.get("reference_image_data")
        model_dir = self._registry.pipeline_dir(payload.get("base_model_path") or job.model)

        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        common: dict[str, Any] = {
            "prompt": payload["prompt"],
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "generator": generator,
            "output_type": "pil",
        }
        if reference:
            image = load_image(reference, self._storage, self._fetch).resize((width, height))
            strength = float(payload.get("reference_image_strength", 50.0)) / 100
            pipeline = self._pipeline(model_dir, "img2img")
            # at least one denoising step, or diffusers refuses the call
            common |= {"image": image, "strength": max(strength, 1.0 / steps)}
            total = max(1, int(steps * common["strength"]))
        else:
            pipeline = self._pipeline(model_dir, "txt2img")
            common |= {"width": width, "height": height}
            total = steps

        def on_step(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            if ctx.should_stop():
                pipe._interrupt = True  # diffusers' documented way to stop the loop
            else:
                ctx.progress(min(99.0, 100.0 * (step + 1) / total))
            return tensors

        with torch.inference_mode():
            result = pipeline(**common, callback_on_step_end=on_step)
        if ctx.should_stop():
            raise JobCancelled(f"task {job.task_id} was cancelled during denoising")
        buf = io.BytesIO()
        result.images[0].save(buf, format="PNG")
        key = f"{task_folder(job.task_type, job.task_id)}/result.png"
        self._storage.put(key, buf.getvalue())
        return {
            "executor_type": "local",
            "result_image_path": key,
            "seed": int(seed),
            "width": result.images[0].width,
            "height": result.images[0].height,
        }

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
