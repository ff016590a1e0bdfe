"""A task row as its Public shape: what is computed rather than stored."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from api.task_queries import public
from state.task_store import READ_COLUMNS

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def row(task_type: str, **fields) -> dict:
    values = dict.fromkeys(READ_COLUMNS)
    values |= {
        "id": uuid.uuid4(),
        "task_type": task_type,
        "status": "PENDING",
        "priority": 0,
        "retry_count": 0,
        "progress": 0.0,
        "created_at": NOW,
        "updated_at": NOW,
        "is_deleted": False,
        "fields": fields,
    }
    return values


@pytest.mark.parametrize("task_type", ["GENERATION", "EDITING", "REFINE"])
def test_fal_ids_come_from_provider_config(task_type):
    config = {"fal_app_id": "fal-ai/flux", "fal_request_id": "req-1", "steps": 4}
    shown = public(row(task_type, provider_config=config))
    assert (shown["fal_app_id"], shown["fal_request_id"]) == ("fal-ai/flux", "req-1")
    assert shown["provider_config"] == config


def test_a_fal_id_the_task_itself_holds_wins_over_provider_config():
    # the create's own fal_app_id, and a worker's PUT of fal_request_id, stay visible
    shown = public(
        row(
            "GENERATION",
            fal_app_id="own-app",
            fal_request_id="req-2",
            provider_config={"fal_app_id": "cfg-app", "fal_request_id": "req-1"},
        )
    )
    assert (shown["fal_app_id"], shown["fal_request_id"]) == ("own-app", "req-2")


def test_experimental_fal_keeps_its_own_fields_and_others_have_none():
    shown = public(
        row("EXPERIMENTAL_FAL", fal_app_id="app", provider_config={"fal_request_id": "cfg"})
    )
    assert (shown["fal_app_id"], shown["fal_request_id"]) == ("app", None)
    assert public(row("GENERATION", provider_config="not an object"))["fal_app_id"] is None
