"""Model registry and the small built-in pipeline.

`ModelRegistry` resolves the names a task may carry (`base_model_path`, `subject_model_path`,
…) to local directories in `save_pretrained` layout, and LoRA names to `.safetensors` files.
Nothing is ever downloaded: pipelines load with `local_files_only=True`.

The default model, `shapes-32`, ships with the package (`gpu/base_model/shapes-32/`): a
small Stable-Diffusion-shaped pipeline trained by `python -m gpu.base_model.train` on coloured
shapes (see `gpu.base_model`). It loads through exactly the path a real checkpoint takes. A
directory of the same name under `models_dir` overrides it. Unless the registry is strict,
a plain name it does not have resolves to the default model, so tasks written for other
deployments (`"base_model_path": "flux-dev"`) still render on the embedded stack.

A model directory may carry `taskstream.json` with `{"max_render_size": N}`: the model draws
at most N pixels a side (its training size), and larger requests are rendered at that scale
and upscaled (`render_size`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "shapes-32"
#: Models shipped in the package, by name.
BUILTIN_MODELS = {DEFAULT_MODEL: Path(__file__).parent / "base_model" / DEFAULT_MODEL}
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

    strict: bool = False  # unknown names fail instead of using the default model

    def pipeline_dir(self, name: str | None) -> Path:
        """The directory of pipeline `name` (the default when None or empty).

        Task-given names are plain names (or hub-style `org/name`) under `models_dir`, or
        built in; only configured aliases may point elsewhere (a task must not make a worker load an arbitrary
        directory). A plain name found nowhere is the default model unless `strict`.
        """
        key = name or self.default
        if key in self.aliases:
            target = Path(self.aliases[key])
            path = target if target.is_absolute() else self.models_dir / target
        elif _plain_path(key, 2):
            path = self.models_dir / key
            if not _is_pipeline(path) and key in BUILTIN_MODELS:
                path = BUILTIN_MODELS[key]
            if not _is_pipeline(path) and not self.strict and key != self.default:
                logger.debug("no model %r here: using the default %r", key, self.default)
                return self.pipeline_dir(self.default)
        else:
            raise UnknownModel(f"model name {key!r} is not a plain name")
        if not _is_pipeline(path):
            raise UnknownModel(f"no model {key!r}: {path} has no model_index.json")
        return path

    def lora_file(self, name: str) -> Path:
        """The `.safetensors` file of LoRA `name` under `<models>/loras/`: a plain name
        (`.safetensors` optional) or a relative path of plain names, as the upload API
        (`identities/my_lora.safetensors`) and trainings (`trainings/<id>.safetensors`)
        return them. Pickled formats (.ckpt, .pt, .bin) are never loaded: unpickling can
        run code."""
        if not _plain_path(name, 3):
            raise UnknownModel(f"LoRA name {name!r} is not a plain name or relative path")
        if not name.endswith(".safetensors"):
            if name.endswith((".ckpt", ".pt", ".pth", ".bin")):
                raise UnknownModel(f"LoRA {name!r}: only .safetensors files are loaded")
            name = f"{name}.safetensors"
        path = self.models_dir / "loras" / name
        if not path.is_file():
            raise UnknownModel(f"no LoRA {name!r} under {self.models_dir / 'loras'}")
        return path


def _plain_path(name: str, depth: int) -> bool:
    """`name` is 1 to `depth` plain names joined by '/' (no '..', no absolute paths)."""
    segments = name.split("/")
    return len(segments) <= depth and all(_NAME.match(s) for s in segments)


def _is_pipeline(path: Path) -> bool:
    return (path / "model_index.json").is_file()


@functools.cache
def _render_cap(model_dir: Path) -> int | None:
    """A model's `max_render_size`, read once per directory (a saved model does not change)."""
    try:
        return int(json.loads((model_dir / "taskstream.json").read_text())["max_render_size"])
    except FileNotFoundError:
        return None


def render_size(model_dir: Path, width: int, height: int) -> tuple[int, int]:
    """The size to render a `width` x `height` request at: the request itself, or, when the
    model's `taskstream.json` caps it (`max_render_size`), the request scaled down to fit
    (aspect kept, multiples of 8); the caller upscales the result to the request."""
    cap = _render_cap(model_dir)
    if cap is None or max(width, height) <= cap:
        return width, height
    scale = cap / max(width, height)
    return max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8)


def _byte_symbols() -> list[str]:
    """GPT-2's reversible byte -> printable character table, in byte order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges to one word's symbols, lowest rank first (as CLIP's tokenizer does)."""
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(pairwise(symbols))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols = [*symbols[:i], symbols[i] + symbols[i + 1], *symbols[i + 2 :]]
    return symbols


def byte_level_vocab(words: Sequence[str] = ()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary: every byte is a token, as is every pair of
    lowercase letters (merged), so common words take fewer of the positions; each of `words`
    (lowercase letters) becomes a single token of its own.

    Whole-word merges are appended word by word, each joining, left to right, the tokens the
    merges before it leave: earlier words' merges rank lower, so they finish first and a later
    word's merges never split an earlier word. Returns (vocab, merges);
    `CLIPTokenizer(vocab=..., merges=...)` builds on them.
    """
    symbols = _byte_symbols()
    letters = "abcdefghijklmnopqrstuvwxyz"
    merges = [(a, b) for a in letters for b in letters]
    merges += [(a, b + "</w>") for a in letters for b in letters]
    ranks = {pair: i for i, pair in enumerate(merges)}
    for word in dict.fromkeys(words):
        parts = _bpe([*word[:-1], word[-1] + "</w>"], ranks)
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            if pair not in ranks:
                ranks[pair] = len(merges)
                merges.append(pair)
            parts = [parts[0] + parts[1], *parts[2:]]
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(a + b for a, b in merges)]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}, merges


def text_parts(hidden: int, positions: int, words: Sequence[str] = ()) -> tuple[Any, Any]:
    """A byte-level BPE `CLIPTokenizer` (`words` as single tokens) and a small 2-layer
    `CLIPTextModel` (random weights)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab, merges = byte_level_vocab(words)
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


def token_ids(tokenizer: Any, captions: list[str]) -> Any:
    """`captions` as a (n, model_max_length) tensor of token ids, padded and truncated."""
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


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
