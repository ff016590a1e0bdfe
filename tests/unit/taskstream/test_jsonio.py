from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from streams.records import TaskStatus
from taskstream import jsonio


def test_what_orjson_writes_reads_back_as_json_would():
    task_id = uuid.uuid4()
    at = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    value = {"id": task_id, "at": at, "status": TaskStatus.PENDING, "s": "\u00fc\U0001f600\n"}
    assert json.loads(jsonio.dumps(value)) == {
        "id": str(task_id),
        "at": "2026-06-01T12:00:00.123456+00:00",
        "status": "PENDING",
        "s": "\u00fc\U0001f600\n",
    }


def test_values_orjson_refuses_go_through_json():
    huge = {"seed": 2**70, 404: "int key"}
    assert json.loads(jsonio.dumps(huge)) == {"seed": 2**70, "404": "int key"}
    # the fallback writes what orjson writes itself the same way
    task_id = uuid.uuid4()
    at = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert jsonio.dumps([2**64, at, task_id]) == (
        f'[18446744073709551616, "2026-06-01T12:00:00.123456+00:00", "{task_id}"]'
    )
    assert orjson.dumps([at, task_id]).decode() == (
        f'["2026-06-01T12:00:00.123456+00:00","{task_id}"]'
    )
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        jsonio.dumps([2**64, object()])
