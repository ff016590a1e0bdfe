"""Training preprocessing: transforms, captions, the dataset written, and clear errors."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from gpu.images import FetchPolicy
from gpu.training.preprocess import TRANSFORMS, preprocess
from state.storage import LocalStorage


def data_url(size=(40, 30), colour="red") -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def run(tmp_path, **payload):
    storage = LocalStorage(tmp_path)
    stages: list[tuple[str, int, int]] = []
    body = {"trigger_word": "sks", "source_images": [data_url(), data_url(colour="blue")]}
    dataset = preprocess(
        {**body, **payload}, "trainings/t1", storage, FetchPolicy(), lambda *s: stages.append(s)
    )
    return dataset, storage, stages


def test_transforms_captions_and_the_written_dataset(tmp_path):
    dataset, storage, stages = run(
        tmp_path,
        preprocessing_transforms=[
            {"type": "resize", "size": 20},
            {"type": "square"},
            {"type": "horizontal_flip"},
        ],
        preprocessing_captioning_strategy="prompt",
        preprocessing_captioning_prompt="a photo of {trigger_word} on a table",
    )
    assert dataset.path == "trainings/t1/dataset"
    assert [i.size for i in dataset.images] == [(20, 20)] * 4  # two sources, flipped copies
    assert set(dataset.captions) == {"a photo of sks on a table"}
    assert storage.get("trainings/t1/dataset/0003.txt") == b"a photo of sks on a table"
    lines = storage.get("trainings/t1/dataset/metadata.jsonl").decode().splitlines()
    assert [json.loads(line)["file_name"] for line in lines] == [f"{i:04d}.png" for i in range(4)]
    assert [s[0] for s in stages if s[1] == 0] == [
        "downloading",
        "validating",
        "transforming",
        "captioning",
        "writing",
    ]
    assert ("downloading", 2, 2) in stages and ("writing", 4, 4) in stages


def test_trigger_only_is_the_default_caption_and_a_template_without_it_gets_it_in_front(tmp_path):
    assert run(tmp_path)[0].captions == ["sks", "sks"]
    dataset = run(
        tmp_path,
        preprocessing_captioning_strategy="prompt",
        preprocessing_captioning_prompt="a toy",
    )[0]
    assert dataset.captions == ["sks a toy"] * 2


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"source_images": []}, "1 to 100 source_images"),
        ({"source_images": [data_url(), "data:image/png;base64,AAAA"]}, "source_images[1]: "),
        ({"source_images": [data_url((8, 64))]}, "at least 16 px a side"),
        ({"preprocessing_transforms": [{"type": "blur"}]}, "type is one of"),
        ({"preprocessing_transforms": [{"type": "resize"}]}, "resize needs size"),
        ({"preprocessing_transforms": [{"type": "center_crop", "size": 64}]}, "larger than"),
        ({"preprocessing_captioning_strategy": "prompt"}, "needs preprocessing_captioning_prompt"),
        ({"preprocessing_captioning_strategy": "blip"}, "must be one of"),
        ({"source_images": ["http://127.0.0.1:1/x.png"]}, "non-public address"),
    ],
)
def test_bad_input_is_a_clear_validation_error(tmp_path, payload, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run(tmp_path, **payload)


def test_every_documented_transform_exists():
    assert set(TRANSFORMS) == {"resize", "center_crop", "square", "horizontal_flip", "grayscale"}
