"""Request values that could not reach Avro or Postgres unchanged are 422s that name the field."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from api.field_types import BIGINT_MAX, NON_FINITE, finite
from api.monitoring import MonitoringQuery
from api.task_models import CREATE_BODY, GenerationTaskUpdate
from api.tasks import ListQuery
from api.training_models import TrainingTaskCreate


def errors(call, *args) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as caught:
        call(*args)
    return [(e["loc"], e["msg"]) for e in caught.value.errors()]


def test_finite_walks_nested_json_and_passes_finite_values_through():
    value = {"a": [1, 2.5, {"b": "NaN"}], "c": None}
    assert finite(value) is value
    for bad in (float("nan"), [1.0, float("inf")], {"a": {"b": [float("-inf")]}}):
        with pytest.raises(ValueError, match=re.escape(NON_FINITE)):
            finite(bad)


@pytest.mark.parametrize(
    ("body", "loc", "msg"),
    [
        (b'"config": {"a": NaN}', ("GENERATION", "config"), NON_FINITE),
        (b'"config": {"a": [1e400]}', ("GENERATION", "config"), NON_FINITE),
        (b'"provider_config": -Infinity', ("GENERATION", "provider_config"), NON_FINITE),
        (b'"subject_lora_weight": NaN', ("GENERATION", "subject_lora_weight"), "finite number"),
        (b'"priority": 2147483648', ("GENERATION", "priority"), "less than or equal to 2147483647"),
        (b'"priority": -2147483649', ("GENERATION", "priority"), "greater than or equal to"),
    ],
)
def test_creates_refuse_values_that_would_change_or_not_fit(body, loc, msg):
    raw = b'{"task_type": "GENERATION", "prompt": "p", ' + body + b"}"
    [(got_loc, got_msg)] = errors(CREATE_BODY.validate_json, raw)
    assert got_loc == loc and msg in got_msg


def test_the_32_bit_bounds_themselves_are_accepted():
    for priority in (2**31 - 1, -(2**31)):
        raw = b'{"task_type": "GENERATION", "prompt": "p", "priority": %d}' % priority
        assert CREATE_BODY.validate_json(raw).priority == priority


def test_updates_and_training_bodies_refuse_them_too():
    assert errors(GenerationTaskUpdate.model_validate_json, b'{"config": {"x": NaN}}') == [
        (("config",), f"Value error, {NON_FINITE}")
    ]
    assert errors(GenerationTaskUpdate.model_validate_json, b'{"retry_count": 2147483648}')[0][
        0
    ] == ("retry_count",)
    raw = b'{"trigger_word": "tw", "preprocessing_transforms": [{"scale": Infinity}]}'
    [(loc, _)] = errors(TrainingTaskCreate.model_validate_json, raw)
    assert loc == ("preprocessing_transforms", 0)
    [(loc, _)] = errors(
        TrainingTaskCreate.model_validate_json, b'{"trigger_word": "tw", "save_every": 2147483648}'
    )
    assert loc == ("save_every",)


def test_offsets_stay_within_what_postgres_can_count():
    assert ListQuery.model_validate({"skip": str(BIGINT_MAX)}).skip == BIGINT_MAX
    assert errors(ListQuery.model_validate, {"skip": str(BIGINT_MAX + 1)})[0][0] == ("skip",)
    biggest = MonitoringQuery.model_validate({"page": str(BIGINT_MAX // 500), "page_size": "500"})
    assert (biggest.page - 1) * biggest.page_size <= BIGINT_MAX
    assert errors(MonitoringQuery.model_validate, {"page": str(BIGINT_MAX)})[0][0] == ("page",)


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "javascript:alert(1)",
        "ftp://example.com/hook",
        "https://",
        "http://example.com:99999/hook",
        "http://[::1/hook",
    ],
)
def test_webhook_urls_must_be_http_urls_with_a_host(url):
    """A webhook URL nobody can call was stored as given, and would fail only at delivery."""
    for model, body in (
        (CREATE_BODY.validate_python, {"task_type": "GENERATION", "prompt": "p"}),
        (TrainingTaskCreate.model_validate, {"trigger_word": "tw"}),
    ):
        [(loc, msg)] = errors(model, {**body, "webhook_url": url})
        assert loc[-1] == "webhook_url" and msg.startswith("Value error"), msg


def test_webhook_urls_that_can_be_called_are_kept_as_given():
    for url in ("https://hooks.example.com/t?x=1", "http://10.0.0.5:8080/cb", ""):
        body = {"task_type": "GENERATION", "prompt": "p", "webhook_url": url}
        assert CREATE_BODY.validate_python(body).webhook_url == url
        assert TrainingTaskCreate.model_validate({"trigger_word": "t", "webhook_url": url})
