"""The log guard: credentials redacted from messages and tracebacks, each cause rate-limited, on a
fake clock (sfu/io/log_limits.py)."""

from __future__ import annotations

import io
import logging

import pytest
from aiohttp.http_exceptions import BadHttpMessage

from sfu.io.log_limits import MAX_CAUSES, MAX_EXC_TEXT, REDACTED, LogGuard, redact

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4Iiwic3RyZWFtIjoiKiJ9.c2lnbmF0dXJlLWJ5dGVz"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def logged():
    """A private logger with a guard (fake clock) and a handler writing to a string."""
    clock = Clock()
    guard = LogGuard(burst=3, window_s=60.0, clock=clock)
    logger = logging.getLogger("sfu.test_log_limits")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.addFilter(guard)
    yield logger, guard, clock, out
    logger.removeHandler(handler)
    logger.removeFilter(guard)


@pytest.mark.parametrize(
    "text",
    [
        f"token {JWT} in a message",
        "Authorization: Bearer s3cr3t-opaque-value",
        "<CIMultiDictProxy('Host': 'x', 'Authorization': 'Bearer abc.def.ghi')>",
        "b'Authorization: abc.def.ghi\\xff'",
        "url ?token=abc123&x=1",
        "a=ice-pwd:0123456789abcdef0123456789\r\n",
    ],
)
def test_redact(text):
    out = redact(text)
    assert REDACTED in out
    for secret in (JWT, "s3cr3t-opaque-value", "abc.def.ghi", "abc123", "0123456789abcdef0123456789"):
        assert secret not in out


def test_messages_and_tracebacks_are_redacted(logged):
    logger, _, _, out = logged
    logger.warning("rejected %s", f"Bearer {JWT}")
    try:
        raise ValueError(f"bad header b'Authorization: Bearer {JWT}'")
    except ValueError:
        logger.exception("handling %s", "request")
    text = out.getvalue()
    assert JWT not in text and JWT.split(".")[2] not in text
    assert text.count(REDACTED) >= 2
    assert "ValueError" in text  # the traceback itself is kept


def test_each_cause_is_rate_limited_and_the_count_reported(logged):
    logger, guard, clock, out = logged
    for i in range(10):
        logger.error("boom %d", i)
    logger.error("another cause")
    lines = out.getvalue().splitlines()
    assert lines == ["ERROR boom 0", "ERROR boom 1", "ERROR boom 2", "ERROR another cause"]
    assert guard.suppressed_total == 7
    clock.t += 60.0  # a new window
    logger.error("boom %d", 10)
    assert out.getvalue().splitlines()[-1] == "ERROR boom 10 (7 similar messages suppressed)"


def test_exception_type_is_part_of_the_cause(logged):
    logger, _, _, out = logged
    for exc in [KeyError, ValueError] * 5:
        try:
            raise exc("x")
        except Exception:
            logger.exception("failed")
    text = out.getvalue()
    assert text.count("KeyError") == 3 and text.count("ValueError") == 3


def test_long_tracebacks_are_cut(logged):
    logger, _, _, out = logged
    try:
        raise RuntimeError("y" * (MAX_EXC_TEXT * 3))
    except RuntimeError:
        logger.exception("big")
    assert len(out.getvalue()) < MAX_EXC_TEXT + 200
    assert "traceback cut" in out.getvalue()


def test_client_parse_errors_are_info_not_error(logged):
    logger, _, _, out = logged
    try:
        raise BadHttpMessage("Invalid header value char")
    except BadHttpMessage:
        logger.exception("Error handling request")
    assert out.getvalue().startswith("INFO Error handling request")


def test_the_cause_table_is_bounded(logged):
    logger, guard, _, _ = logged
    for i in range(MAX_CAUSES + 10):
        logger.warning(f"distinct {i}")  # noqa: G004 - a new cause each time, on purpose
    assert len(guard._windows) <= MAX_CAUSES


def test_plain_info_lines_are_redacted_not_limited(logged):
    logger, guard, _, out = logged
    for i in range(10):
        logger.info("session %d closed, token %s", i, JWT)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and guard.suppressed_total == 0
    assert all(JWT not in line for line in lines)
