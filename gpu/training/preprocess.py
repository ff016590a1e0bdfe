"""Training preprocessing: source images in, a captioned dataset in storage out.

Stages, reported as they start (`PreprocessingStatusEvent.current_stage`):

1. ``downloading``: each of `source_images` is read like any inference input (base64, data
   URL, http(s) URL with the worker's fetch policy, or a storage path) and decoded;
2. ``validating``: at least `MIN_SIDE` pixels a side; between 1 and `MAX_SOURCE_IMAGES`
   images. Any bad image fails the task, naming the image and the reason;
3. ``transforming``: `preprocessing_transforms`, in order (`TRANSFORMS` below);
4. ``captioning``: `trigger_only` captions every image with the trigger word; `prompt` uses
   `preprocessing_captioning_prompt` as a template, where ``{trigger_word}`` is replaced by
   the trigger word (which is put in front when the template lacks it). There is no
   captioning model in this project: a template is what the prompt strategy means here;
5. ``writing``: the images (PNG) and captions (``.txt``) go to
   ``trainings/<task id>/dataset/`` in storage, with ``metadata.jsonl`` listing both.

Every failure is a `ValueError` with a message that says what to fix.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps

from gpu.images import FetchPolicy, load_image
from state.storage import Storage

MAX_SOURCE_IMAGES = 100
MIN_SIDE = 16
CAPTIONING = ("trigger_only", "prompt")
STAGES = ("downloading", "validating", "transforming", "captioning", "writing")


def _size_of(spec: dict, key: str = "size") -> tuple[int, int]:
    if key in spec:
        width = height = spec[key]
    else:
        width, height = spec.get("width"), spec.get("height")
    if not (isinstance(width, int) and isinstance(height, int)) or not (
        MIN_SIDE <= width <= 4096 and MIN_SIDE <= height <= 4096
    ):
        raise ValueError(f"{spec['type']} needs size (or width and height), {MIN_SIDE} to 4096")
    return width, height


def _resize(image: Image.Image, spec: dict) -> list[Image.Image]:
    if "size" in spec and "width" not in spec:
        # the shorter side to `size`, aspect kept
        side = _size_of(spec)[0]
        scale = side / min(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    else:
        size = _size_of(spec)
    return [image.resize(size, Image.Resampling.LANCZOS)]


def _center_crop(image: Image.Image, spec: dict) -> list[Image.Image]:
    width, height = _size_of(spec)
    if width > image.width or height > image.height:
        raise ValueError(f"center_crop {width}x{height} is larger than an image of {image.size}")
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return [image.crop((left, top, left + width, top + height))]


def _square(image: Image.Image, spec: dict) -> list[Image.Image]:
    side = min(image.size)
    return _center_crop(image, {"type": "square", "size": side}) if side >= MIN_SIDE else [image]


#: Supported `preprocessing_transforms` entries, by `type`:
#: - ``{"type": "resize", "size": N}``: shorter side to N (aspect kept); or exact
#:   ``{"type": "resize", "width": W, "height": H}``;
#: - ``{"type": "center_crop", "size": N}`` (or width/height): the centred crop;
#: - ``{"type": "square"}``: the largest centred square;
#: - ``{"type": "horizontal_flip"}``: adds a mirrored copy of every image (augmentation);
#: - ``{"type": "grayscale"}``: converts to grey (kept as RGB).
TRANSFORMS: dict[str, Callable[[Image.Image, dict], list[Image.Image]]] = {
    "resize": _resize,
    "center_crop": _center_crop,
    "square": _square,
    "horizontal_flip": lambda image, spec: [image, ImageOps.mirror(image)],
    "grayscale": lambda image, spec: [ImageOps.grayscale(image).convert("RGB")],
}


@dataclass(frozen=True)
class Dataset:
    path: str  # storage folder
    images: list[Image.Image]
    captions: list[str]


Progress = Callable[[str, int, int], None]  # (stage, processed, total)


def caption_for(strategy: str | None, template: str | None, trigger_word: str) -> str:
    strategy = strategy or "trigger_only"
    if strategy == "trigger_only":
        return trigger_word
    if strategy == "prompt":
        if not template:
            raise ValueError("the prompt captioning strategy needs preprocessing_captioning_prompt")
        if "{trigger_word}" in template:
            return template.replace("{trigger_word}", trigger_word)
        return f"{trigger_word} {template}"
    raise ValueError(f"preprocessing_captioning_strategy must be one of {CAPTIONING}")


def check_transforms(transforms: list[Any] | None) -> list[dict]:
    """The transforms as dicts, or a ValueError naming the first bad one."""
    checked = []
    for i, spec in enumerate(transforms or []):
        if not isinstance(spec, dict) or spec.get("type") not in TRANSFORMS:
            raise ValueError(
                f"preprocessing_transforms[{i}] must be an object whose type is one of"
                f" {sorted(TRANSFORMS)}"
            )
        checked.append(spec)
    return checked


def preprocess(
    payload: dict,
    folder: str,
    storage: Storage,
    fetch: FetchPolicy,
    progress: Progress = lambda stage, done, total: None,
) -> Dataset:
    """Build the dataset of a training task's `payload` under `<folder>/dataset`."""
    sources = payload.get("source_images") or []
    if not 1 <= len(sources) <= MAX_SOURCE_IMAGES:
        raise ValueError(f"a training needs 1 to {MAX_SOURCE_IMAGES} source_images")
    transforms = check_transforms(payload.get("preprocessing_transforms"))
    caption = caption_for(
        payload.get("preprocessing_captioning_strategy"),
        payload.get("preprocessing_captioning_prompt"),
        payload["trigger_word"],
    )
    total = len(sources)
    progress("downloading", 0, total)
    images = []
    for i, ref in enumerate(sources):
        try:
            images.append(load_image(ref, storage, fetch))
        except ValueError as exc:
            raise ValueError(f"source_images[{i}]: {exc}") from exc
        progress("downloading", i + 1, total)
    progress("validating", 0, total)
    for i, image in enumerate(images):
        if min(image.size) < MIN_SIDE:
            raise ValueError(
                f"source_images[{i}] is {image.width}x{image.height}; at least {MIN_SIDE} px a side"
            )
    progress("transforming", 0, total)
    for spec in transforms:
        images = [out for image in images for out in TRANSFORMS[spec["type"]](image, spec)]
    progress("captioning", 0, len(images))
    captions = [caption] * len(images)
    dataset = f"{folder}/dataset"
    progress("writing", 0, len(images))
    lines = []
    for i, (image, text) in enumerate(zip(images, captions, strict=True)):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        storage.put(f"{dataset}/{i:04d}.png", buf.getvalue())
        storage.put(f"{dataset}/{i:04d}.txt", text.encode())
        lines.append(json.dumps({"file_name": f"{i:04d}.png", "text": text}))
        progress("writing", i + 1, len(images))
    storage.put(f"{dataset}/metadata.jsonl", ("\n".join(lines) + "\n").encode())
    return Dataset(dataset, images, captions)
