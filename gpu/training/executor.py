"""The training executor: one training job = preprocessing, then LoRA or full training.

Progress goes out through `ctx.status` as details the task machine merges into the task
(and turns into `PreprocessingStatusEvent` / `TrainingStatusEvent`): `phase`
(PREPROCESSING, TRAINING), the preprocessing stage and file counts, then `current_step`,
`total_steps`, `eta_seconds` and `logs`. A new stage or phase is a milestone (always sent);
steps are throttled by the runner.

Where things go (the model registry's folders, so results are usable at once):
- LoRA: `<models>/loras/trainings/<task id>.safetensors`, named
  `trainings/<task id>.safetensors` in `local_model_path` (a `*_model_path` value);
- FULL: the pipeline directory `<models>/trained-<task id>` (a `config.base_model_path`
  value of any task);
- checkpoints: `<models>/loras/trainings/<task id>/checkpoint-<step>.safetensors`;
- dataset and samples: storage, `trainings/<task id>/dataset/` and `.../samples/`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpu.executors import JobContext
from gpu.images import FetchPolicy
from gpu.models import ModelRegistry
from gpu.training.preprocess import preprocess
from gpu.training.trainer import Outputs, TrainSpec, train
from state.storage import Storage, task_folder
from streams.records import InferenceJob, TrainingJob

#: Share of the progress bar that preprocessing fills; training fills the rest.
PREPROCESSING_SHARE = 5.0


def _now() -> str:
    return datetime.now(UTC).isoformat()


def spec_of(payload: dict) -> TrainSpec:
    """The task's training settings over `TrainSpec`'s defaults (None means the default)."""
    given = {
        name: payload[name]
        for name in TrainSpec.__dataclass_fields__
        if payload.get(name) is not None
    }
    spec = replace(TrainSpec(), **given)
    spec.check()
    return spec


class TrainingExecutor:
    def __init__(self, registry: ModelRegistry, storage: Storage, fetch: FetchPolicy) -> None:
        self._registry = registry
        self._storage = storage
        self._fetch = fetch

    def __call__(self, job: InferenceJob | TrainingJob, ctx: JobContext) -> dict:
        if not isinstance(job, TrainingJob):
            raise ValueError("the training executor runs training jobs only")
        payload = json.loads(job.payload_json)
        spec = spec_of(payload)
        model_dir = self._registry.pipeline_dir(payload.get("base_model_path"))
        folder = task_folder("TRAINING", job.task_id)
        started = _now()
        logs: list[str] = []

        def log(line: str) -> None:
            logs.append(f"{_now()} {line}")

        def stage(name: str, done: int, total: int) -> None:
            ctx.status(
                PREPROCESSING_SHARE * done / max(total, 1) if name == "downloading" else 0.0,
                {
                    "phase": "PREPROCESSING",
                    "preprocessing_stage": name,
                    "processed_files_count": done,
                    "total_files_count": total,
                    "preprocessing_started_at": started,
                },
                done == 0,
            )

        dataset = preprocess(payload, folder, self._storage, self._fetch, stage)
        log(f"preprocessed {len(dataset.images)} images into {dataset.path}")
        prepared = {
            "processed_dataset_path": dataset.path,
            "preprocessing_stage": "completed",
            "processed_files_count": len(dataset.images),
            "total_files_count": len(dataset.images),
            "preprocessing_started_at": started,
            "preprocessing_completed_at": _now(),
        }
        ctx.status(
            PREPROCESSING_SHARE,
            {**prepared, "phase": "TRAINING", "current_step": 0, "total_steps": spec.steps},
            True,
        )
        lora_root = self._registry.models_dir / "loras" / "trainings"
        if spec.training_type == "LORA":
            name = f"trainings/{job.task_id}.safetensors"
            final = lora_root / f"{job.task_id}.safetensors"
        else:
            name = f"trained-{job.task_id}"
            final = self._registry.models_dir / name
        outputs = Outputs(lora_root / str(job.task_id), final, folder)

        def on_step(step: int, total: int, eta: int | None, loss: float) -> None:
            ctx.status(
                PREPROCESSING_SHARE + (100 - PREPROCESSING_SHARE) * step / total,
                {
                    "phase": "TRAINING",
                    "current_step": step,
                    "total_steps": total,
                    "eta_seconds": eta,
                    "loss": round(loss, 5),
                    "logs": "\n".join(logs),
                },
                False,
            )

        result: dict[str, Any] = train(
            spec,
            model_dir,
            dataset.images,
            dataset.captions,
            outputs,
            self._storage,
            ctx.should_stop,
            on_step,
            log,
        )
        models = self._registry.models_dir
        return {
            **prepared,
            "phase": "COMPLETED",
            "current_step": spec.steps,
            "total_steps": spec.steps,
            "eta_seconds": 0,
            "local_model_path": name,
            "training_folder": folder,
            "checkpoints": [
                str(Path(p).relative_to(models / "loras")) for p in result["checkpoints"]
            ],
            "samples": result["samples"],
            "logs": "\n".join(logs),
        }
