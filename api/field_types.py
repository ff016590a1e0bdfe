"""Field types the request models share, for values that must survive the trip to Avro and
Postgres unchanged.

JSON has no NaN or Infinity, but Python's and pydantic's parsers accept them (and read a
number too large for a float, such as 1e400, as Infinity). Left alone they are stored as null,
silently changing what the client sent, so free-form JSON fields refuse them with a 422 that
names the field. Integers that travel as Avro `int` or sit in an `integer` column are held to
32 bits, and offsets to what Postgres's `bigint` can count, instead of failing at the
serializer or in SQL.
"""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, ConfigDict, Field

#: For request models: refuse NaN and Infinity in float fields too.
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

NON_FINITE = "NaN and Infinity are not JSON numbers (nor is a number too large for a double)"


def finite(value: Any) -> Any:
    """`value` unchanged, or ValueError when a float anywhere in it is NaN or infinite."""
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is float:
            if not math.isfinite(item):
                raise ValueError(NON_FINITE)
        elif type(item) is dict:
            pending.extend(item.values())
        elif type(item) is list:
            pending.extend(item)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(finite)]
JsonValue = Annotated[Any, AfterValidator(finite)]

INT32_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1
Int32 = Annotated[int, Field(ge=-(2**31), le=INT32_MAX)]
Count32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
Offset = Annotated[int, Field(ge=0, le=BIGINT_MAX, description="Number of items to skip")]


def _http_url(value: str) -> str:
    """`value` unchanged if it is an http(s) URL with a host ("" too: the seed's training
    default for none); ValueError saying why not otherwise. Whether the host may be called is
    for the sender to decide when it calls, as names resolve differently over time."""
    if value == "":
        return value
    parts = urlsplit(value)  # raises ValueError for a malformed IPv6 host
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host, such as https://example.com/hook")
    parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    return value


WebhookUrl = Annotated[
    str,
    Field(max_length=2048, description="http(s) URL called as the task changes"),
    AfterValidator(_http_url),
]
