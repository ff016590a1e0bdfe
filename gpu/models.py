"""Model registry and the small built-in pipeline.

`ModelRegistry` resolves the names a task may carry (`base_model_path`, `subject_model_path`,
…) to local directories in `save_pretrained` layout, and LoRA names to `.safetensors` files.
Nothing is ever downloaded: pipelines load with `local_files_only=True`.

`build_tiny_pipeline` writes a small Stable-Diffusion-shaped pipeline (CLIP text encoder, a
UNet, a VAE, a DDIM scheduler and a byte-level BPE tokenizer) with random weights drawn from
a fixed seed, so every data dir gets the same model and the worker loads it through exactly
the path a real checkpoint takes. It makes noise, not pictures; a trained base model replaces
it as the default when one is configured.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "tiny-sd"
#: Task fields naming models; each maps to a directory unless configured otherwise.
MODEL_FIELDS = (
    "base_model_path",
    "subject_model_path",
    "product_model_path",
    "style_model_path",
    "product2_model_path",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UnknownModel(ValueError):
    """A task named a model or LoRA this worker does not have (a validation error)."""


@dataclass
class ModelRegistry:
    """Names -> local directories (pipelines) and files (LoRAs)."""

    models_dir: Path
    default: str = DEFAULT_MODEL
    aliases: dict[str, str] = field(default_factory=dict)  # name -> directory name or path

    def pipeline_dir(self, name: str | None) -> Path:
        """The directory of pipeline `name` (the default when None or empty).

        Task-given names are plain names under `models_dir`; only configured aliases may
        point elsewhere (a task must not make a worker load an arbitrary directory).
        """
        key = name or self.default
        if key in self.aliases:
            target = Path(self.aliases[key])
            path = target if target.is_absolute() else self.models_dir / target
        elif _NAME.match(key):
            path = self.models_dir / key
        else:
            raise UnknownModel(f"model name {key!r} is not a plain name")
        if not (path / "model_index.json").is_file():
            raise UnknownModel(f"no model {key!r}: {path} has no model_index.json")
        return path

    def lora_file(self, name: str) -> Path:
        """The `.safetensors` file of LoRA `name` (under `<models>/loras/`)."""
        if not _NAME.match(name):
            raise UnknownModel(f"LoRA name {name!r} is not a plain name")
        path = (
            self.models_dir
            / "loras"
            / (name if name.endswith(".safetensors") else f"{name}.safetensors")
        )
        if not path.is_file():
            raise UnknownModel(f"no LoRA {name!r} under {self.models_dir / 'loras'}")
        return path


def _byte_symbols() -> list[str]:
    """GPT-2's reversible byte -> printable character table, in byte order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def byte_level_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary: every byte is a token, as is every pair of
    lowercase letters (merged), so common words take fewer of the 77 positions.

    Returns (vocab, merges); `CLIPTokenizer(vocab=..., merges=...)` builds on them.
    """
    symbols = _byte_symbols()
    letters = "abcdefghijklmnopqrstuvwxyz"
    merges = [(a, b) for a in letters for b in letters]
    merges += [(a, b + "</w>") for a in letters for b in letters]
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(a + b for a, b in merges)]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}, merges


def text_parts(hidden: int, positions: int) -> tuple[Any, Any]:
    """A byte-level BPE `CLIPTokenizer` and a small 2-layer `CLIPTextModel` (random weights)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab, merges = byte_level_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=positions)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=positions,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    return tokenizer, text_encoder


def small_unet(sample_size: int, cross_attention_dim: int, norm_groups: int) -> Any:
    """A two-level (32, 64)-channel `UNet2DConditionModel` on 4-channel latents."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=norm_groups,
    )


def small_vae(sample_size: int) -> Any:
    """A (16, 32)-channel `AutoencoderKL`: RGB <-> 4-channel latents at half the size."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=sample_size,
    )


def build_tiny_pipeline(target: Path, seed: int = 0) -> Path:
    """Write the small random-weight pipeline to `target` (idempotent); returns `target`."""
    if (target / "model_index.json").is_file():
        return target
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    logger.info("building the tiny pipeline in %s", target)
    tmp = target.with_name(target.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer, text_encoder = text_parts(hidden=32, positions=77)
    unet = small_unet(sample_size=32, cross_attention_dim=32, norm_groups=8)
    vae = small_vae(sample_size=64)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(tmp / "pipeline", safe_serialization=True)
    os.replace(tmp / "pipeline", target)
    for leftover in sorted(tmp.rglob("*"), reverse=True):
        leftover.unlink() if leftover.is_file() else leftover.rmdir()
    tmp.rmdir()
    return target
