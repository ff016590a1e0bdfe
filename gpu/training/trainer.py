"""LoRA (or full UNet) fine-tuning of a registry pipeline on a preprocessed dataset.

The dataset's images are encoded once by the frozen VAE (at the model's render size,
the UNet's sample size times the VAE's scale) and its captions once by the frozen text encoder; each step then
draws a batch, adds noise at random timesteps and trains the UNet to predict it (the DDPM
objective the base model was trained with: noise or, under v-prediction, velocity). `LORA` trains rank-`rank` adapters (peft) on the
UNet's attention projections; `FULL` trains every UNet weight.

- Steps: `steps` optimizer steps of `batch_size` x `gradient_accumulation` examples. After
  each, `on_step(step, total, eta_seconds, loss)`; the ETA is the mean of the last 20 measured
  step times (sampling and checkpoint time included) times the steps left.
- Optimizer: `adamw8bit` uses bitsandbytes when it imports, else plain AdamW (logged);
  `adamw` is AdamW.
- Checkpoints every `save_every` steps: `checkpoint-<step>.safetensors` in the checkpoint
  folder, the oldest removed beyond `max_step_saves_to_keep`.
- Samples every `sample_every` steps (and at the end) when `sample_prompts` are given: each
  prompt rendered with `sample_steps` steps and a fixed seed, stored as
  `<folder>/samples/step_<step>_<i>.png`.
- Cancel: `should_stop()` is read after every step; when it says so, `JobCancelled` is raised
  and the checkpoints written so far stay.
- Result: LoRA weights as a diffusers LoRA `.safetensors` (loadable by `load_lora_weights`,
  so usable as a `*_model_path` at once); FULL as a whole pipeline directory whose UNet is
  the trained one (usable as a task's `config.base_model_path`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu.base_model.train import prediction_target
from gpu.executors import JobCancelled
from gpu.models import token_ids
from state.storage import Storage

logger = logging.getLogger(__name__)

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
OPTIMIZERS = ("adamw8bit", "adamw")
SAMPLE_SEED = 1234


@dataclass(frozen=True)
class TrainSpec:
    training_type: str = "LORA"
    rank: int = 16
    steps: int = 1000
    learning_rate: float = 1e-4
    batch_size: int = 1
    gradient_accumulation: int = 1
    optimizer: str = "adamw8bit"
    save_every: int = 2000
    max_step_saves_to_keep: int = 4
    sample_every: int = 250
    sample_steps: int = 25
    sample_prompts: list[str] = field(default_factory=list)
    seed: int = 0

    def check(self) -> None:
        if self.training_type not in ("LORA", "FULL"):
            raise ValueError("training_type must be LORA or FULL")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}")
        for name in ("rank", "steps", "batch_size", "gradient_accumulation", "sample_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0 < self.learning_rate < 1:
            raise ValueError("learning_rate must be between 0 and 1")


@dataclass(frozen=True)
class Outputs:
    """Where a run writes: checkpoints and the final weights on the worker's disk (the model
    registry's folders), samples in storage under `storage_folder`."""

    checkpoints: Path
    final: Path  # a .safetensors file (LORA) or a pipeline directory (FULL)
    storage_folder: str


StepCallback = Callable[[int, int, int | None, float], None]


def _optimizer(spec: TrainSpec, params: list, log: Callable[[str], None]) -> Any:
    import torch

    if spec.optimizer == "adamw8bit":
        try:
            import bitsandbytes  # type: ignore[import-not-found]

            return bitsandbytes.optim.AdamW8bit(params, lr=spec.learning_rate)
        except Exception as exc:  # noqa: BLE001 - any import or CPU-only failure
            log(f"optimizer adamw8bit unavailable ({type(exc).__name__}): using AdamW")
    return torch.optim.AdamW(params, lr=spec.learning_rate)


def train(
    spec: TrainSpec,
    model_dir: Path,
    images: list[Any],
    captions: list[str],
    outputs: Outputs,
    storage: Storage,
    should_stop: Callable[[], bool],
    on_step: StepCallback,
    log: Callable[[str], None],
) -> dict:
    """Run the training; returns {"final": path, "checkpoints": [...], "samples": [...]}."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    spec.check()
    torch.manual_seed(spec.seed)
    rng = torch.Generator().manual_seed(spec.seed)
    pipe = StableDiffusionPipeline.from_pretrained(
        model_dir, local_files_only=True, use_safetensors=True
    )
    pipe.set_progress_bar_config(disable=True)
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    width, height = _train_size(pipe)

    with torch.no_grad():
        pixels = torch.stack(
            [
                torch.from_numpy(np.asarray(i.convert("RGB").resize((width, height)), np.float32))
                for i in images
            ]
        )
        pixels = pixels.permute(0, 3, 1, 2) / 127.5 - 1.0
        latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
        ids = token_ids(tokenizer, captions)
        hidden = text_encoder(ids).last_hidden_state

    if spec.training_type == "LORA":
        from peft import LoraConfig

        unet.add_adapter(
            LoraConfig(
                r=spec.rank,
                lora_alpha=spec.rank,
                init_lora_weights="gaussian",
                target_modules=LORA_TARGETS,
            )
        )
    else:
        unet.requires_grad_(True)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = _optimizer(spec, params, log)
    log(
        f"{spec.training_type} training: {len(images)} images at {width}x{height},"
        f" {sum(p.numel() for p in params):,} trainable parameters, {spec.steps} steps"
    )
    outputs.checkpoints.mkdir(parents=True, exist_ok=True)
    kept: deque[Path] = deque()
    samples: list[str] = []
    times: deque[float] = deque(maxlen=20)
    loss_value = 0.0
    for step in range(1, spec.steps + 1):
        started = time.monotonic()
        unet.train()
        for _ in range(spec.gradient_accumulation):
            pick = torch.randint(len(latents), (spec.batch_size,), generator=rng)
            clean = latents[pick]
            noise = torch.randn(clean.shape, generator=rng)
            steps_t = torch.randint(
                0, noise_scheduler.config.num_train_timesteps, (spec.batch_size,), generator=rng
            )
            noisy = noise_scheduler.add_noise(clean, noise, steps_t)
            predicted = unet(noisy, steps_t, encoder_hidden_states=hidden[pick]).sample
            expected = prediction_target(noise_scheduler, clean, noise, steps_t)
            loss = torch.nn.functional.mse_loss(predicted, expected) / spec.gradient_accumulation
            loss.backward()
            loss_value = float(loss.item()) * spec.gradient_accumulation
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        unet.eval()
        if spec.save_every and step % spec.save_every == 0 and step < spec.steps:
            kept.append(_save(unet, spec, outputs.checkpoints / f"checkpoint-{step}.safetensors"))
            while len(kept) > max(1, spec.max_step_saves_to_keep):
                kept.popleft().unlink(missing_ok=True)
            log(f"step {step}: checkpoint {kept[-1].name}")
        if spec.sample_prompts and (
            step == spec.steps or (spec.sample_every and step % spec.sample_every == 0)
        ):
            samples += _samples(pipe, spec, step, width, height, outputs.storage_folder, storage)
        times.append(time.monotonic() - started)
        eta = round(sum(times) / len(times) * (spec.steps - step))
        on_step(step, spec.steps, eta, loss_value)
        if step < spec.steps and should_stop():
            log(f"cancelled after step {step}; {len(kept)} checkpoint(s) kept")
            raise JobCancelled(f"training cancelled after step {step}")
    if spec.training_type == "LORA":
        _save(unet, spec, outputs.final)
    else:
        outputs.final.parent.mkdir(parents=True, exist_ok=True)
        pipe.save_pretrained(outputs.final, safe_serialization=True)
        cap = model_dir / "taskstream.json"
        if cap.is_file():
            (outputs.final / "taskstream.json").write_bytes(cap.read_bytes())
    log(f"done: {outputs.final.name} (last loss {loss_value:.4f})")
    return {"final": outputs.final, "checkpoints": list(kept), "samples": samples}


def _train_size(pipe: Any) -> tuple[int, int]:
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return side, side


def _save(unet: Any, spec: TrainSpec, path: Path) -> Path:
    """LoRA: the adapter in diffusers' LoRA format; FULL: the UNet's weights."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.training_type == "LORA":
        from diffusers import StableDiffusionPipeline
        from peft.utils import get_peft_model_state_dict

        StableDiffusionPipeline.save_lora_weights(
            path.parent, unet_lora_layers=get_peft_model_state_dict(unet), weight_name=path.name
        )
    else:
        save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(path))
    return path


def _samples(
    pipe: Any, spec: TrainSpec, step: int, width: int, height: int, folder: str, storage: Storage
) -> list[str]:
    import io

    import torch

    keys = []
    with torch.inference_mode():
        images = pipe(
            spec.sample_prompts,
            width=width,
            height=height,
            num_inference_steps=spec.sample_steps,
            generator=[torch.Generator().manual_seed(SAMPLE_SEED) for _ in spec.sample_prompts],
        ).images
    for i, image in enumerate(images):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        key = f"{folder}/samples/step_{step:06d}_{i}.png"
        storage.put(key, buf.getvalue())
        keys.append(key)
    return keys
