"""Which of a task body's fields the media route lists, under which names."""

from __future__ import annotations

from api.monitoring import MEDIA_INPUTS, MEDIA_OUTPUTS, MediaRef, media_refs


def names_and_refs(task: dict, fields=MEDIA_INPUTS) -> list[tuple[str, str]]:
    return [(r.name, r.ref) for r in media_refs(task, fields)]


def test_every_input_field_of_every_task_type_is_listed_under_its_seed_name():
    assert names_and_refs(
        {
            "base_image_url": "uploads/acme/base.png",  # a REFINE's: its Public shows none
            "input_image_path": "uploads/acme/in.png",
            "palette_image_path": "uploads/acme/palette.png",
            "input_image_paths": ["uploads/acme/1.png", "uploads/acme/2.png"],
            "reference_images": ["https://example.com/r.png"],
        }
    ) == [
        ("base_image", "uploads/acme/base.png"),
        ("input_image", "uploads/acme/in.png"),
        ("input_image_0", "uploads/acme/1.png"),
        ("input_image_1", "uploads/acme/2.png"),
        ("palette_image", "uploads/acme/palette.png"),
        ("reference_image_0", "https://example.com/r.png"),
    ]


def test_a_create_field_and_its_public_alias_give_one_item():
    task = {"base_image": "uploads/acme/b.png", "base_image_path": "uploads/acme/b.png"}
    assert names_and_refs(task) == [("base_image", "uploads/acme/b.png")]


def test_inline_images_and_other_schemes_have_no_url_so_no_item():
    task = {
        "base_image_data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/",
        "input_image": "data:image/png;base64,iVBORw0KGgo=",
        "reference_image_url": "file:///etc/passwd.png",
        "input_images": [None, "", "  "],
    }
    assert names_and_refs(task) == []


def test_outputs_include_lists_videos_and_remote_results():
    task = {
        "result_image_paths": ["background_removals/t/0.png", "background_removals/t/1.png"],
        "result_video_path": "video_generations/t/result.mp4",
        "result_url": "https://fal.media/files/out.png",
    }
    assert media_refs(task, MEDIA_OUTPUTS) == [
        MediaRef("result_image_0", "image", "background_removals/t/0.png"),
        MediaRef("result_image_1", "image", "background_removals/t/1.png"),
        MediaRef("result_video", "video", "video_generations/t/result.mp4"),
        MediaRef("result", "image", "https://fal.media/files/out.png"),
    ]
