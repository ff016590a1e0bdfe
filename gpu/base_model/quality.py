"""Classical checks of a generated shape image (no learned classifier).

- Background: the median colour of the image's border.
- Foreground: pixels far from the background colour; its dominant colour is the named colour
  nearest to the foreground's median.
- Shape: the foreground's fill ratio within its bounding box, which separates the three
  shapes by geometry alone: square ~1.0, circle ~pi/4 = 0.79, triangle ~0.5 (measured on
  the dataset at 32 px: squares 0.88-1.0, circles 0.68-0.84, triangles 0.50-0.61).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from gpu.base_model.shapes import COLOURS

#: Fill-ratio bounds between triangle | circle | square.
TRIANGLE_MAX = 0.65
CIRCLE_MAX = 0.86
#: A pixel this far (RGB distance) from the background belongs to the foreground.
FOREGROUND_DISTANCE = 60.0
MIN_FOREGROUND = 0.03  # of the image; less is "no shape"


@dataclass(frozen=True)
class Verdict:
    colour: str | None
    shape: str | None
    background: str
    fill_ratio: float


def nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(np.linalg.norm(palette - rgb, axis=1)))]


def judge(image: Image.Image) -> Verdict:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    mask = np.linalg.norm(pixels - background, axis=2) > FOREGROUND_DISTANCE
    background_name = nearest_colour(background)
    if mask.mean() < MIN_FOREGROUND:
        return Verdict(None, None, background_name, 0.0)
    colour = nearest_colour(np.median(pixels[mask], axis=0))
    rows, cols = np.nonzero(mask)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    fill = float(mask.sum() / box)
    shape = "triangle" if fill < TRIANGLE_MAX else "circle" if fill < CIRCLE_MAX else "square"
    return Verdict(colour, shape, background_name, fill)
