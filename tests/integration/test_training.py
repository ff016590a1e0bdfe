"""Training end to end on the embedded stack and the built-in base model: the training API,
preprocessing, real LoRA training whose result measurably moves generations toward the
training images, progress events in order, checkpoint retention, cancel, FULL training and
failures with a clear message."""

from __future__ import annotations

import base64
import io
import random
import time
import uuid

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gpu.base_model.shapes import COLOURS
from streams.records import PreprocessingStatusEvent, TrainingStatusEvent
from streams.registry import HttpSchemaRegistry
from streams.schemas import load_catalog
from streams.serde import AvroSerde
from tests.conftest import new_database
from tests.integration.conftest import run_members, serve_api, settings_for
from tests.integration.kafka_helpers import read_topic

PINK = (255, 105, 180)  # outside the base model's palette: it has never drawn pink
PROMPT = "a sks square on a white background"


@pytest.fixture(scope="module")
def api(infra, bootstrap, tmp_path_factory):
    models = tmp_path_factory.mktemp("training-models")
    with (
        new_database(infra) as url,
        serve_api(settings_for(bootstrap, url, models_dir=models)) as api,
        run_members(api),
    ):
        yield api


def pink_squares(count: int = 8) -> list[Image.Image]:
    rng = random.Random(5)
    images = []
    for _ in range(count):
        image = Image.new("RGB", (64, 64), (245, 245, 245))
        side = rng.randint(30, 42)
        x, y = rng.randint(4, 60 - side), rng.randint(4, 60 - side)
        ImageDraw.Draw(image).rectangle((x, y, x + side, y + side), fill=PINK)
        images.append(image)
    return images


def data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def create(api, token=None, **body) -> dict:
    status, task = api.call("POST", "/api/v1/training/", body, token or api.admin_token)
    assert status == 200, task
    return task


def wait_training(api, task_id: str, wanted: set[str], timeout: float, until=None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, task = api.call("GET", f"/api/v1/training/{task_id}", token=api.admin_token)
        assert status == 200, task
        if task["status"] in wanted and (until is None or until(task)):
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.2)


def generate(api, seed: int, **fields) -> np.ndarray:
    body = {"task_type": "GENERATION", "prompt": PROMPT, "width": 32, "height": 32, "seed": seed}
    body |= {"config": {"num_inference_steps": 20, "guidance_scale": 4.0}, **fields}
    status, task = api.call("POST", "/api/v1/tasks/", body, api.admin_token)
    assert status == 200, task
    deadline = time.monotonic() + 120
    while (done := api.call("GET", f"/api/v1/tasks/{task['id']}", token=api.admin_token)[1])[
        "status"
    ] not in ("COMPLETED", "FAILED"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert done["status"] == "COMPLETED", done
    with Image.open(api.settings.storage_root() / done["result_image_path"]) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def events_of(api, bootstrap, task_id: str) -> list:
    registry = HttpSchemaRegistry(api.url + "/schema-registry", f"admin:{api.admin_token}")
    serde = AvroSerde(registry, load_catalog())
    try:
        messages = read_topic(bootstrap, "tasks.events", 1_000_000, timeout=3)
        return [serde.deserialize(m.value()) for m in messages if m.key().decode() == task_id]
    finally:
        registry.close()


def test_a_lora_trained_on_pink_squares_draws_them_pinker(api, bootstrap):
    images = pink_squares()
    task = create(
        api,
        trigger_word="sks",
        source_images=[data_url(i) for i in images],
        base_model_path=None,  # null: the default, which the embedded stack maps to its model
        rank=8,
        steps=160,
        learning_rate=1e-3,
        batch_size=4,
        save_every=50,
        max_step_saves_to_keep=2,
        sample_every=80,
        sample_steps=8,
        sample_prompts=[PROMPT],
        preprocessing_transforms=[{"type": "resize", "size": 32}],
        preprocessing_captioning_strategy="prompt",
        preprocessing_captioning_prompt="a {trigger_word} square on a white background",
    )
    assert task["status"] == "PENDING" and task["base_model_path"] == "black-forest-labs/FLUX.1-dev"
    done = wait_training(api, task["id"], {"COMPLETED", "FAILED"}, timeout=600)
    assert done["status"] == "COMPLETED", done
    assert (done["current_step"], done["total_steps"], done["progress"]) == (160, 160, 100.0)
    assert done["local_model_path"] == f"trainings/{task['id']}.safetensors"
    assert "using AdamW" in done["logs"]  # no bitsandbytes on this CPU-only machine

    storage = api.settings.storage_root()
    dataset = storage / done["processed_dataset_path"]
    assert sorted(p.name for p in dataset.glob("*.png")) == [f"{i:04d}.png" for i in range(8)]
    assert (dataset / "0003.txt").read_text() == PROMPT
    assert done["processed_files_count"] == done["total_files_count"] == 8
    with Image.open(dataset / "0000.png") as first:
        assert first.size == (32, 32)

    loras = api.settings.models_root() / "loras"
    checkpoints = sorted(p.name for p in (loras / "trainings" / task["id"]).iterdir())
    assert checkpoints == ["checkpoint-100.safetensors", "checkpoint-150.safetensors"]
    assert (loras / done["local_model_path"]).is_file()
    assert [s.rsplit("/", 1)[1] for s in done["samples"]] == [
        "step_000080_0.png",
        "step_000160_0.png",
    ]
    assert all((storage / s).is_file() for s in done["samples"])

    # events: preprocessing, then training steps in order, ending COMPLETED with the model
    events = [
        e
        for e in events_of(api, bootstrap, task["id"])
        if isinstance(e, PreprocessingStatusEvent | TrainingStatusEvent)
    ]
    kinds = [type(e).__name__ for e in events]
    first_training = kinds.index("TrainingStatusEvent")
    assert set(kinds[:first_training]) == {"PreprocessingStatusEvent"}
    assert events[first_training - 1].status == "COMPLETED"
    assert events[first_training - 1].processed_dataset_path == done["processed_dataset_path"]
    steps = [e.current_step for e in events[first_training:]]
    assert steps == sorted(steps) and steps[-1] == 160 and len(set(steps)) >= 3
    assert events[-1].status == "COMPLETED" and events[-1].local_model_path
    assert any(e.eta_seconds for e in events[first_training:-1])

    # proof that it learned: same seeds, with and without the LoRA, against the training
    # images' mean colour (and their share of pink pixels)
    target = np.mean([np.asarray(i, np.float32).reshape(-1, 3) for i in images], axis=(0, 1))
    plain = np.stack([generate(api, seed) for seed in range(4)])
    tuned = np.stack(
        [generate(api, seed, subject_model_path=done["local_model_path"]) for seed in range(4)]
    )

    def colour_error(batch: np.ndarray) -> float:
        return float(((batch.mean(axis=(1, 2)) - target) ** 2).sum(axis=1).mean())

    palette = np.array([PINK, *COLOURS.values()], np.float32)

    def pink_share(batch: np.ndarray) -> float:
        """The share of pixels nearer pink than any colour the base model knows."""
        nearest = np.linalg.norm(batch[..., None, :] - palette, axis=-1).argmin(axis=-1)
        return float((nearest == 0).mean())

    assert colour_error(tuned) < 0.5 * colour_error(plain), (
        colour_error(tuned),
        colour_error(plain),
    )
    assert pink_share(tuned) > pink_share(plain) + 0.05, (pink_share(tuned), pink_share(plain))


def test_cancel_mid_training_keeps_the_last_checkpoint(api):
    task = create(
        api,
        trigger_word="zq",
        source_images=[data_url(i) for i in pink_squares(2)],
        steps=5000,
        rank=4,
        save_every=10,
        max_step_saves_to_keep=1,
        sample_every=0,
    )
    running = wait_training(
        api, task["id"], {"TRAINING"}, timeout=120, until=lambda t: t["current_step"] >= 25
    )
    assert running["eta_seconds"] is not None and 0 < running["progress"] < 100
    status, cancelled = api.call(
        "POST", f"/api/v1/training/{task['id']}/cancel", token=api.admin_token
    )
    assert status == 200 and cancelled["status"] == "CANCELLED", cancelled
    folder = api.settings.models_root() / "loras" / "trainings" / task["id"]
    # the worker sees the cancel within a few steps; wait until its folder stops changing
    deadline, seen, since = time.monotonic() + 30, None, time.monotonic()
    while time.monotonic() - since < 2:
        now = sorted(p.name for p in folder.iterdir())
        if now != seen:
            seen, since = now, time.monotonic()
        assert time.monotonic() < deadline, seen
        time.sleep(0.1)
    [checkpoint] = seen  # retention held at 1, and the last one written is kept
    step = int(checkpoint.removesuffix(".safetensors").split("-")[1])
    assert step >= 20 and step % 10 == 0
    assert not (folder.parent / f"{task['id']}.safetensors").exists()
    final = wait_training(api, task["id"], {"CANCELLED"}, timeout=5)
    assert final["local_model_path"] is None


def test_full_training_makes_a_base_model_for_generation(api):
    task = create(
        api,
        trigger_word="sks",
        training_type="FULL",
        source_images=[data_url(i) for i in pink_squares(4)],
        steps=12,
        batch_size=2,
        learning_rate=5e-4,
        save_every=5,
        max_step_saves_to_keep=1,
        sample_every=0,
    )
    done = wait_training(api, task["id"], {"COMPLETED", "FAILED"}, timeout=300)
    assert done["status"] == "COMPLETED", done
    assert done["local_model_path"] == f"trained-{task['id']}"
    folder = api.settings.models_root() / "loras" / "trainings" / task["id"]
    assert [p.name for p in folder.iterdir()] == ["checkpoint-10.safetensors"]
    tuned = generate(
        api, 1, config={"num_inference_steps": 20, "base_model_path": done["local_model_path"]}
    )
    assert tuned.shape == (32, 32, 3) and not (tuned == generate(api, 1)).all()


def test_defaults_validation_tenancy_and_a_bad_source_image(api):
    status, body = api.call("POST", "/api/v1/training/", {"rank": 4}, api.admin_token)
    assert status == 422 and body["detail"][0]["loc"] == ["body", "trigger_word"]
    task = create(api, trigger_word="abc", rank=None, steps=None, learning_rate=None)
    assert (task["rank"], task["steps"], task["learning_rate"]) == (16, 1000, 1e-4)
    assert (task["training_type"], task["entity_type"], task["optimizer"]) == (
        "LORA",
        "PRODUCT",
        "adamw8bit",
    )
    assert (task["save_every"], task["max_step_saves_to_keep"], task["sample_every"]) == (
        2000,
        4,
        250,
    )
    assert task["preprocessing_captioning_strategy"] == "trigger_only"
    assert task["total_steps"] == 1000 and task["priority"] == 1 and task["webhook_url"] == ""
    failed = wait_training(api, task["id"], {"FAILED"}, timeout=60)
    assert "1 to 100 source_images" in failed["error_message"]
    assert failed["completed_at"]

    broken = create(
        api,
        trigger_word="abc",
        source_images=[data_url(pink_squares(1)[0]), "data:image/png;base64,bm90IGFuIGltYWdl"],
    )
    failed = wait_training(api, broken["id"], {"FAILED"}, timeout=60)
    assert failed["error_message"].startswith("source_images[1]: not a decodable image")

    acme = api.call("POST", "/api/v1/admin/tokens", {"tenant": "acme"}, api.admin_token)[1]
    mine = create(api, acme["token"], trigger_word="mine")
    assert mine["origin_tenant_id"] == "acme"
    assert api.call("GET", f"/api/v1/training/{task['id']}", token=acme["token"])[0] == 404
    listed = api.call("GET", "/api/v1/training/?limit=50", token=acme["token"])[1]
    assert [t["id"] for t in listed] == [mine["id"]]
    assert len(api.call("GET", "/api/v1/training/", token=api.admin_token)[1]) <= 10
    # training tasks have their own routes: the generic task routes do not show them
    assert api.call("GET", f"/api/v1/tasks/{task['id']}", token=api.admin_token)[0] == 404
    tasks = api.call("GET", "/api/v1/tasks/?limit=100", token=api.admin_token)[1]
    assert task["id"] not in {t["id"] for t in tasks}
    status, monitored = api.call(
        "GET", "/api/v1/monitoring/tasks?page_size=100", token=api.admin_token
    )
    assert status == 200 and task["id"] not in {t["id"] for t in monitored["items"]}


def test_an_idempotency_key_makes_a_training_create_safe_to_retry(api):
    admin = api.admin_token
    key = {"Idempotency-Key": f"train-{uuid.uuid4()}"}
    status, first = api.call(
        "POST", "/api/v1/training/", {"trigger_word": "idem"}, admin, headers=key
    )
    assert status == 200, first
    status, again = api.call(
        "POST", "/api/v1/training/", {"trigger_word": "idem"}, admin, headers=key
    )
    assert status == 200 and again["id"] == first["id"]
    status, other = api.call(
        "POST", "/api/v1/training/", {"trigger_word": "other"}, admin, headers=key
    )
    assert (
        status == 409
        and other["detail"] == "Idempotency-Key was already used with a different body"
    )
    listed = api.call("GET", "/api/v1/training/?limit=1000", token=admin)[1]
    assert [t["id"] for t in listed].count(first["id"]) == 1
    assert api.call(
        "POST",
        "/api/v1/training/",
        {"trigger_word": "x"},
        admin,
        headers={"Idempotency-Key": "k" * 256},
    ) == (400, {"detail": "Idempotency-Key must be 1-255 characters"})
