"""Classical checks of a generated shape image (no learned classifier).

- Background: the median colour of the image's border.
- Foreground colour: among the pixels far from the background, the median of the more
  distinct half, matched to the nearest named colour. Taking the more distinct half keeps
  the anti-aliased (or blurry) rim, a mix of both colours, out of the vote.
- Shape outline: pixels more than halfway from the background colour to the foreground
  colour. A mid-level threshold puts the outline on the middle of a soft edge, so a blurred
  square keeps its size instead of shrinking towards a circle.
- Shape, from two geometric measures of the outline within its bounding box:
  * taper, the filled share of the top half over that of the bottom half: ~1/3 for the
    dataset's apex-up triangle, ~1 for circles and squares;
  * corner fill, the filled share of the four corner blocks (a quarter of the box's side
    each): ~1 for a square, ~0.3 for a circle, whose corners are cut away.

Measured on the dataset's renders at 32 and 64 px, sharp and Gaussian-blurred up to a
radius of 2 px at 32 px: triangles' taper 0.30-0.69 against circles' and squares' 0.85 and
up; circles' corner fill 0.16-0.53 against squares' 0.59 and up. The thresholds sit in the
gaps (`tests/unit/gpu/test_base_model_data.py` holds them to it).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gpu.base_model.shapes import COLOURS, SHAPES

#: Below this taper (top-half fill over bottom-half fill) the shape is a triangle.
TRIANGLE_TAPER = 0.77
#: Above this corner fill a (non-triangle) shape is a square, below it a circle.
SQUARE_CORNERS = 0.56
#: A pixel this far (RGB distance) from the background counts towards the foreground colour.
FOREGROUND_DISTANCE = 60.0
MIN_FOREGROUND = 0.03  # of the image; less is "no shape"


@dataclass(frozen=True)
class Verdict:
    colour: str | None
    shape: str | None
    background: str
    taper: float = 0.0
    corners: float = 0.0


def nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(np.linalg.norm(palette - rgb, axis=1)))]


def judge(image: Image.Image) -> Verdict:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    distance = np.linalg.norm(pixels - background, axis=2)
    far = distance > FOREGROUND_DISTANCE
    background_name = nearest_colour(background)
    if far.mean() < MIN_FOREGROUND:
        return Verdict(None, None, background_name)
    foreground = np.median(pixels[distance >= np.median(distance[far])], axis=0)
    outline = distance > 0.5 * np.linalg.norm(foreground - background)
    rows, cols = np.nonzero(outline)
    box = outline[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = box.shape
    top, bottom = box[: height // 2].mean(), box[height - height // 2 :].mean()
    taper = float(top / max(bottom, 1e-6))
    k, m = max(1, round(height / 4)), max(1, round(width / 4))
    corners = float(
        np.mean(
            [box[:k, :m].mean(), box[:k, -m:].mean(), box[-k:, :m].mean(), box[-k:, -m:].mean()]
        )
    )
    if taper < TRIANGLE_TAPER:
        shape = "triangle"
    else:
        shape = "square" if corners > SQUARE_CORNERS else "circle"
    return Verdict(nearest_colour(foreground), shape, background_name, taper, corners)


FLOORS = {"colour": 0.80, "shape": 0.60}


def prompts() -> list[tuple[str, str, str]]:
    """(colour, shape, background) for every colour x shape, backgrounds cycling."""
    names = list(COLOURS)
    out = []
    for i, colour in enumerate(names):
        for j, shape in enumerate(SHAPES):
            others = [n for n in names if n != colour]
            out.append((colour, shape, others[(i + j) % len(others)]))
    return out


def evaluate(
    model: Path, seeds: int = 4, steps: int = 20, size: int = 32, guidance: float = 4.0
) -> dict:
    """Generate every `prompts()` prompt with `seeds` seeds and judge each image: the
    colour and shape agreement rates, and per-class (colour ok, shape ok, total) counts."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        model, local_files_only=True, use_safetensors=True
    )
    pipe.set_progress_bar_config(disable=True)
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # colour ok, shape ok, total
    started = time.perf_counter()
    for colour, shape, background in prompts():
        prompt = f"a {colour} {shape} on a {background} background"
        images = pipe(
            [prompt] * seeds,
            width=size,
            height=size,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=[torch.Generator().manual_seed(s) for s in range(seeds)],
        ).images
        for image in images:
            verdict = judge(image)
            for key in (f"colour:{colour}", f"shape:{shape}"):
                row = hits[key]
                row[0] += verdict.colour == colour
                row[1] += verdict.shape == shape
                row[2] += 1
    total = sum(hits[f"shape:{s}"][2] for s in SHAPES)
    return {
        "colour": sum(hits[f"shape:{s}"][0] for s in SHAPES) / total,
        "shape": sum(hits[f"shape:{s}"][1] for s in SHAPES) / total,
        "images": total,
        "seconds": time.perf_counter() - started,
        "table": {k: tuple(v) for k, v in sorted(hits.items())},
    }


def evaluate_renders(seeds: int = 4, size: int = 32) -> dict:
    """The same checks on the dataset's own renders of `prompts()` (placed by seed): what a
    model that drew its training data perfectly would score."""
    import random

    from gpu.base_model.shapes import Sample, render

    colour_ok = shape_ok = total = 0
    for colour, shape, background in prompts():
        for seed in range(seeds):
            placement = random.Random(seed)  # noqa: S311 - reproducible placement, not secrets
            verdict = judge(render(Sample(shape, colour, background), size, placement))
            colour_ok += verdict.colour == colour
            shape_ok += verdict.shape == shape
            total += 1
    return {"colour": colour_ok / total, "shape": shape_ok / total, "images": total}
