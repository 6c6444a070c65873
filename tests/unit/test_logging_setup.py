"""Log lines of `sfu serve` (sfu/logging_setup.py): text or JSON, with stream and session ids."""

from __future__ import annotations

import io
import json
import logging

import pytest

from sfu.logging_setup import configure


@pytest.fixture
def emit():
    handlers = []

    def make(fmt: str):
        out = io.StringIO()
        handlers.append(configure("info", fmt, stream=out))
        return out

    level = logging.getLogger().level
    yield make
    for handler in handlers:
        logging.getLogger().removeHandler(handler)
    logging.getLogger().setLevel(level)


def test_json_lines_carry_stream_and_session_or_null(emit):
    out = emit("json")
    log = logging.getLogger("sfu.test")
    log.info("publish %s", "s1", extra={"stream": "s1", "session": "abc"})
    log.info("started")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "publish s1" and (first["stream"], first["session"]) == ("s1", "abc")
    assert first["level"] == "INFO" and first["logger"] == "sfu.test" and first["time"]
    assert (second["stream"], second["session"]) == (None, None)


def test_text_lines_append_the_ids_when_there_are_some(emit):
    out = emit("text")
    log = logging.getLogger("sfu.test")
    log.info("closed", extra={"stream": "s1", "session": "abc"})
    log.info("started")
    first, second = out.getvalue().splitlines()
    assert first.endswith("INFO sfu.test: closed [stream=s1 session=abc]")
    assert second.endswith("INFO sfu.test: started")
