"""A request aiohttp cannot parse is the client's error: one INFO line, no traceback."""

from __future__ import annotations

import logging
import sys

from aiohttp.http_exceptions import BadHttpMessage

from api.app import ClientErrorLog


def record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        exc_info,
    )


def test_a_malformed_request_is_logged_as_one_info_line_with_its_reason():
    # as the C parser words it: the reason, then the offending bytes on lines of their own
    entry = record(BadHttpMessage("Invalid header value char:\n\n  b'X: \\x00'\n     ^"))
    assert ClientErrorLog().filter(entry)
    assert (entry.levelno, entry.levelname) == (logging.INFO, "INFO")
    assert entry.exc_info is None
    assert (
        logging.Formatter().format(entry)
        == "Error handling request from 127.0.0.1: 400 Invalid header value char"
    )


def test_anything_else_keeps_its_level_and_traceback():
    entry = record(RuntimeError("boom"))
    assert ClientErrorLog().filter(entry)
    assert entry.levelno == logging.ERROR and entry.exc_info is not None
