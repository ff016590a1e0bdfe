"""The shape dataset and the classical checks that will grade the base model: on the
dataset's own images (ground truth) the checks must be right, or their verdicts on
generated images would mean nothing."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from PIL import Image, ImageFilter

from gpu.base_model.quality import judge
from gpu.base_model.shapes import COLOURS, SHAPES, Sample, combinations, dataset, render


def test_every_combination_once_with_a_caption():
    combos = combinations()
    assert len(combos) == len(SHAPES) * len(COLOURS) * (len(COLOURS) - 1) == 168
    assert len({c.caption for c in combos}) == 168
    assert Sample("circle", "red", "white").caption == "a red circle on a white background"


def test_the_dataset_is_deterministic_and_varied():
    first = [(img.tobytes(), s) for img, s in dataset(40, seed=3)]
    again = [(img.tobytes(), s) for img, s in dataset(40, seed=3)]
    other = [(img.tobytes(), s) for img, s in dataset(40, seed=4)]
    assert first == again and first != other
    assert len({s for _, s in first}) == 40  # no repeats within one pass over the 168
    assert all(Image.frombytes("RGB", (32, 32), b).size == (32, 32) for b, _ in first[:3])


@pytest.mark.parametrize("blur", [0.0, 1.0, 1.5])
@pytest.mark.parametrize("size", [32, 64])
def test_the_checks_are_right_on_ground_truth(size, blur):
    """Sharp renders and blurred ones (a model's output is softer than its data): the blur
    radius is given at 32 px and scaled with the image."""
    rng = random.Random(11)
    colour_hits = shape_hits = total = 0
    misses: Counter[str] = Counter()
    for sample in combinations():
        for _ in range(2):
            image = render(sample, size, rng)
            if blur:
                image = image.filter(ImageFilter.GaussianBlur(blur * size / 32))
            verdict = judge(image)
            total += 1
            colour_hits += verdict.colour == sample.colour
            shape_hits += verdict.shape == sample.shape
            if verdict.shape != sample.shape:
                misses[f"{sample.shape}->{verdict.shape}"] += 1
            assert verdict.background == sample.background
    assert colour_hits == total
    assert shape_hits / total >= 0.99, misses


def test_an_empty_image_has_no_shape():
    verdict = judge(Image.new("RGB", (32, 32), COLOURS["blue"]))
    assert (verdict.colour, verdict.shape, verdict.background) == (None, None, "blue")


def test_the_trained_tokenizer_reads_each_caption_word_as_one_token():
    from gpu.base_model.shapes import CAPTION_WORDS
    from gpu.models import text_parts

    tokenizer, _ = text_parts(hidden=8, positions=32, words=CAPTION_WORDS)
    caption = Sample("triangle", "purple", "orange").caption
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(caption).input_ids)
    assert tokens[1:-1] == [f"{word}</w>" for word in caption.split()]
    # words outside the list still tokenize, byte by byte where nothing merges
    assert tokenizer.decode(tokenizer("a zebra on a crimson background").input_ids[1:-1]) == (
        "a zebra on a crimson background"
    )
