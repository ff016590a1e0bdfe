"""Procedurally generated, captioned images: a coloured shape on a plain background.

Every image shows one circle, square or triangle in one named colour, on a background of
another named colour, captioned like ``"a red circle on a white background"``. Shapes are
drawn at 4x and downsampled, so edges are anti-aliased as in real images; position and size
vary (the shape spans 40-70% of the image), so a model must learn shape and colour, not
pixels. Everything is deterministic given a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw

#: Named colours (RGB). Chosen far apart, so a model's colour can be told by nearest match.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "orange": (245, 140, 20),
    "purple": (140, 50, 170),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
#: Every word a caption uses; the trained tokenizer makes each one a single token.
CAPTION_WORDS = ("a", "on", "background", *COLOURS, *SHAPES)
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Sample:
    shape: str
    colour: str
    background: str

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} on a {self.background} background"


def combinations() -> list[Sample]:
    """Every shape x colour x background (background differs from the colour): 168."""
    return [
        Sample(shape, colour, background)
        for shape in SHAPES
        for colour in COLOURS
        for background in COLOURS
        if background != colour
    ]


def render(sample: Sample, size: int = 32, rng: random.Random | None = None) -> Image.Image:
    """Draw `sample` at `size` x `size`, placed and scaled by `rng` (centred when None)."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), COLOURS[sample.background])
    extent = (rng.uniform(0.4, 0.7) if rng else 0.55) * big
    margin = (big - extent) / 2
    cx = big / 2 + (rng.uniform(-margin, margin) * 0.8 if rng else 0.0)
    cy = big / 2 + (rng.uniform(-margin, margin) * 0.8 if rng else 0.0)
    half = extent / 2
    box = (cx - half, cy - half, cx + half, cy + half)
    draw = ImageDraw.Draw(image)
    fill = COLOURS[sample.colour]
    if sample.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif sample.shape == "square":
        draw.rectangle(box, fill=fill)
    elif sample.shape == "triangle":
        draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=fill)
    else:
        raise ValueError(f"unknown shape {sample.shape!r}")
    return image.resize((size, size), Image.Resampling.LANCZOS)


def dataset(count: int, seed: int = 0, size: int = 32) -> Iterator[tuple[Image.Image, Sample]]:
    """`count` (image, sample) pairs cycling through every combination in a seeded order."""
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    pool = combinations()
    for i in range(count):
        if i % len(pool) == 0:
            rng.shuffle(pool)
        sample = pool[i % len(pool)]
        yield render(sample, size, rng), sample
