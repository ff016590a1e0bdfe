"""The built-in base model: it passes the quality floors, and its trainer is reproducible."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from gpu.base_model.quality import FLOORS, evaluate
from gpu.base_model.train import TrainConfig, train
from gpu.models import BUILTIN_MODELS, DEFAULT_MODEL

MODEL = BUILTIN_MODELS[DEFAULT_MODEL]


@pytest.mark.slow
def test_the_built_in_model_draws_the_prompted_colour_and_shape():
    result = evaluate(MODEL, seeds=4, steps=20)
    table = "\n".join(f"{k}: {v}" for k, v in result["table"].items())
    assert result["colour"] >= FLOORS["colour"], table
    assert result["shape"] >= FLOORS["shape"], table


def test_the_committed_weights_are_small_safetensors_with_their_config():
    files = [p for p in MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20 * 1024 * 1024
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".ckpt", ".pkl")]
    recorded = json.loads((MODEL / "train_config.json").read_text())["config"]
    assert TrainConfig(**recorded) == TrainConfig()  # the defaults are what made these weights
    assert json.loads((MODEL / "taskstream.json").read_text()) == {"max_render_size": 32}


@pytest.mark.slow
def test_training_is_reproducible_from_its_seed(tmp_path):
    config = TrainConfig(pool=64, vae_steps=3, unet_steps=3, vae_batch=8, unet_batch=8)
    train(tmp_path / "a", config)
    train(tmp_path / "b", config)
    for part in (
        "unet/diffusion_pytorch_model",
        "vae/diffusion_pytorch_model",
        "text_encoder/model",
    ):
        a = load_file(tmp_path / "a" / f"{part}.safetensors")
        b = load_file(tmp_path / "b" / f"{part}.safetensors")
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), part
    assert (tmp_path / "a" / "taskstream.json").is_file()
