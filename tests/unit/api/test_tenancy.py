"""The image fields a task body can name stored files in are the ones the tenancy check reads."""

from __future__ import annotations

import typing

from api.task_models import CreateTaskBody
from api.tenancy import IMAGE_INPUTS
from api.training_models import TrainingTaskCreate

CREATE_MODELS = [*typing.get_args(typing.get_args(CreateTaskBody)[0]), TrainingTaskCreate]


def test_every_image_field_of_a_create_body_is_checked_and_every_checked_name_exists():
    fields = [(name, f) for model in CREATE_MODELS for name, f in model.model_fields.items()]
    # `Image` fields say so in their description (or their type's, inside a list or union);
    # training's sources are plain strings
    images = {name for name, f in fields if "a storage path" in f"{f.description} {f.annotation!r}"}
    assert {"base_image", "base_image_url", "palette_image", "input_image"} <= images, images
    assert images | {"source_images"} <= IMAGE_INPUTS, images - IMAGE_INPUTS
    names = {name for name, _ in fields}
    assert IMAGE_INPUTS <= names, IMAGE_INPUTS - names
    # the deprecated spellings the workers still read are checked too
    assert {"base_image_data", "reference_image_url", "reference_image_data"} <= IMAGE_INPUTS
