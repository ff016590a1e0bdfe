"""The diffusion executor on the built-in model, without brokers: batches against single
calls, cancellation between steps, progress, and input validation."""

from __future__ import annotations

import base64
import io
import json
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image

from gpu.executors import JobCancelled, JobContext
from gpu.executors.diffusion import DiffusionExecutor
from gpu.models import BUILTIN_MODELS, DEFAULT_MODEL, ModelRegistry
from state.storage import LocalStorage
from streams.records import InferenceJob
from tests.integration.conftest import DIRS


@pytest.fixture(scope="module")
def executor(tmp_path_factory) -> DiffusionExecutor:
    return DiffusionExecutor(
        ModelRegistry(DIRS["models"]), LocalStorage(tmp_path_factory.mktemp("storage"))
    )


def job(**payload) -> InferenceJob:
    body = {"prompt": "a red circle", "width": 32, "height": 32, **payload}
    body["config"] = {"num_inference_steps": 4, **body.get("config", {})}
    return InferenceJob(
        job_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        task_type="GENERATION",
        payload_json=json.dumps(body),
        enqueued_at=datetime.now(UTC),
    )


def pixels(executor: DiffusionExecutor, result: dict) -> np.ndarray:
    data = executor._storage.get(result["result_image_path"])
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.int16)


def never() -> bool:
    return False


def test_a_batch_matches_single_calls_to_within_float_rounding(executor):
    jobs = [job(seed=s, prompt=p) for s, p in [(1, "a red circle"), (2, "x"), (3, "a blue square")]]
    assert len({executor.batch_key(j) for j in jobs}) == 1
    batched = executor.run_batch(jobs, [JobContext(never)] * 3)
    for j, together in zip(jobs, batched, strict=True):
        together_px = pixels(executor, together)
        alone_px = pixels(executor, executor(j, JobContext(never)))
        # float kernels are not batch-invariant (~1e-6): at most one 8-bit level apart
        assert np.abs(together_px - alone_px).max() <= 1
        assert (together_px != alone_px).mean() < 0.01
    assert executor.batch_key(job(seed=1, width=64)) != executor.batch_key(jobs[0])
    assert executor.batch_key(job(reference_image_url="generations/x/y.png")) is None


def test_progress_is_reported_per_step_and_a_cancel_stops_between_steps(executor):
    seen: list[float] = []
    calls = {"n": 0}

    def stop_after_two() -> bool:
        calls["n"] += 1
        return len(seen) >= 2

    with pytest.raises(JobCancelled):
        executor(
            job(seed=5, config={"num_inference_steps": 50}), JobContext(stop_after_two, seen.append)
        )
    assert 2 <= len(seen) <= 3 and seen[0] == pytest.approx(2.0)


def test_a_batch_with_one_bad_job_fails_only_that_one(executor):
    good, bad = job(seed=1), job(seed=2, width=30)
    outcomes = executor.run_batch([good, bad], [JobContext(never)] * 2)
    assert outcomes[0]["result_image_path"].endswith(f"{good.task_id}/result.png")
    assert isinstance(outcomes[1], ValueError) and "multiples of 8" in str(outcomes[1])


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"num_inference_steps": 0}, "config.num_inference_steps must be an integer from 1 to"),
        ({"num_inference_steps": 10**9}, "from 1 to 200, not 1000000000"),
        ({"num_inference_steps": 2.5}, "must be an integer from 1 to 200, not 2.5"),
        ({"num_inference_steps": "many"}, "must be an integer from 1 to 200, not 'many'"),
        ({"guidance_scale": -5}, "config.guidance_scale must be a number from 0 to 100"),
        ({"guidance_scale": True}, "config.guidance_scale must be a number"),
    ],
)
def test_config_values_out_of_range_fail_the_job_and_say_which(executor, config, reason):
    # 0 steps used to become the default, and non-numbers failed with Python's own message
    [outcome] = executor.run_batch([job(config=config)], [JobContext(never)])
    assert isinstance(outcome, ValueError) and reason in str(outcome)


def test_an_edits_strength_outside_0_to_1_is_refused_not_clamped(executor):
    base = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(base, format="PNG")
    edit = job(
        base_image=base64.b64encode(base.getvalue()).decode(),
        config={"num_inference_steps": 2, "strength": 5},
    ).model_copy(update={"task_type": "EDITING"})
    with pytest.raises(ValueError, match="config.strength must be a number from 0 to 1, not 5"):
        executor(edit, JobContext(never))


def write_lora(models, name: str) -> None:
    """A random LoRA for the tiny UNet's attention projections, saved as diffusers does."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(BUILTIN_MODELS[DEFAULT_MODEL] / "unet")
    torch.manual_seed(0)
    unet.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,
        )
    )
    StableDiffusionPipeline.save_lora_weights(
        models / "loras",
        unet_lora_layers=get_peft_model_state_dict(unet),
        weight_name=f"{name}.safetensors",
    )


def test_a_lora_changes_the_output_and_is_removed_after(executor):
    write_lora(DIRS["models"], "test-style")
    plain = pixels(executor, executor(job(seed=11), JobContext(never)))
    styled = pixels(
        executor,
        executor(
            job(seed=11, style_model_path="test-style", style_lora_weight=1.0), JobContext(never)
        ),
    )
    zero = pixels(
        executor,
        executor(
            job(seed=11, style_model_path="test-style", style_lora_weight=0.0), JobContext(never)
        ),
    )
    assert np.abs(styled - plain).mean() > 1.0
    assert np.abs(zero - plain).max() <= 1  # weight 0: the base model's output
    # detached afterwards: the next plain job renders exactly as before
    assert (pixels(executor, executor(job(seed=11), JobContext(never))) == plain).all()
    with pytest.raises(ValueError, match="no LoRA"):
        executor(job(seed=1, subject_model_path="missing"), JobContext(never))
    with pytest.raises(ValueError, match="not a plain name"):
        executor(job(seed=1, subject_model_path="../tiny-sd/unet"), JobContext(never))
    with pytest.raises(ValueError, match="not a plain name"):
        executor(job(seed=1, base_model_path="/etc"), JobContext(never))


def refine_job(**payload) -> InferenceJob:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), "orange").save(buf, format="PNG")
    body = {
        "base_image_url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
        "upscale_factor": 2,
        **payload,
    }
    return InferenceJob(
        job_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        task_type="REFINE",
        payload_json=json.dumps(body),
        enqueued_at=datetime.now(UTC),
    )


def test_face_detail_re_renders_only_the_detected_faces(executor, monkeypatch):
    box = (40, 30, 48, 48)  # on the 192x128 upscale; with its 25% margin: 28..100, 18..90
    plain = pixels(executor, executor(refine_job(), JobContext(never)))
    monkeypatch.setattr(executor, "_faces", lambda image: [box])
    result = executor(
        refine_job(face_detail_enabled=True, face_detail_steps=4, face_detail_seed=1),
        JobContext(never),
    )
    assert result["faces_detected"] == 1 and (result["width"], result["height"]) == (192, 128)
    detailed = pixels(executor, result)
    changed = np.argwhere(np.abs(detailed - plain).max(axis=2) > 0)
    assert len(changed) > 100
    (top, left), (bottom, right) = changed.min(axis=0), changed.max(axis=0)
    assert 18 <= top and bottom < 90 and 28 <= left and right < 100


def test_the_haar_detector_loads_and_finds_no_face_in_a_plain_image():
    from gpu.faces import haar_faces

    assert haar_faces(Image.new("RGB", (128, 128), "white")) == []


def test_model_names_it_lacks_render_with_the_default_model_unless_strict(executor):
    plain = pixels(executor, executor(job(seed=3), JobContext(never)))
    for name in ("black-forest-labs/FLUX.1-dev", "sdxl-base"):
        other = executor(job(seed=3, base_model_path=name), JobContext(never))
        assert (pixels(executor, other) == plain).all(), name
    strict = DiffusionExecutor(ModelRegistry(DIRS["models"], strict=True), executor._storage)
    with pytest.raises(ValueError, match="no model 'sdxl-base'"):
        strict(job(seed=3, base_model_path="sdxl-base"), JobContext(never))


def test_requests_above_the_models_size_render_at_its_size_and_are_upscaled(executor):
    small = Image.open(
        io.BytesIO(
            executor._storage.get(
                executor(job(seed=4, width=32, height=32), JobContext(never))["result_image_path"]
            )
        )
    )
    large = pixels(executor, executor(job(seed=4, width=96, height=96), JobContext(never)))
    assert large.shape == (96, 96, 3)
    expected = np.asarray(small.resize((96, 96), Image.Resampling.LANCZOS), dtype=np.int16)
    assert np.abs(large - expected).max() <= 1
