"""What a task's body may be, for the API and the task processor alike.

The API validates a request with the create models before it sends a command. The task
processor checks every `CreateTask`'s body with `body_problem`, so a command produced
straight to Kafka is held to what POST accepts (a body the API built passes again, at about
7 µs). Pure pydantic: the processor imports it without the web stack.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from api.task_models import CREATE_BODY, TaskType
from api.training_models import TRAINING_SERVER_SIDE, TrainingTaskCreate
from streams.records import TRAINING_TASK_TYPE

# A JSON string's NUL escape, not preceded by an escaped backslash ("\\u0000" is text).
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


NUL_MESSAGE = "Strings may not contain NUL characters (\\u0000)"


def has_nul(json_text: str) -> bool:
    """Whether JSON text (ASCII-escaped, as `json.dumps` writes it) holds a NUL character,
    which Postgres text and jsonb cannot store."""
    if "\x00" in json_text:
        return True
    # the plain substring test first: it is ~100x faster than the regex, which only has to
    # tell an escaped NUL from an escaped backslash followed by "u0000"
    return "\\u0000" in json_text and _ESCAPED_NUL.search(json_text) is not None


#: Every task type a CreateTask may name.
TASK_TYPES = frozenset({*TaskType, TRAINING_TASK_TYPE})


def body_problem(task_type: str, body: dict[str, Any]) -> str | None:
    """Why `body` is not a valid body of a `task_type` task (None when it is), listing the
    fields at fault as the API's 422 does."""
    if task_type not in TASK_TYPES:
        return f"unknown task_type {task_type!r}; expected one of {', '.join(sorted(TASK_TYPES))}"
    if body.get("task_type", task_type) != task_type:
        return f"the body's task_type {body['task_type']!r} is not the command's {task_type!r}"
    try:
        if task_type == TRAINING_TASK_TYPE:
            TrainingTaskCreate.model_validate(
                {k: v for k, v in body.items() if k not in TRAINING_SERVER_SIDE}
            )
        else:
            CREATE_BODY.validate_python({**body, "task_type": task_type})
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_context=False)
        )
    return None
