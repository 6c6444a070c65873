"""SDP text to checked lines (RFC 8866 §5): size limits, line syntax, numbers and tokens.

The lexical layer under the SDP parser (`sfu.wire.sdp`) and the trickle fragment parser
(`sfu.wire.sdpfrag`). Malformed input raises `sfu.errors.BadRequest` (whole text) or `ValueError`
(one line; the parsers add its number).
"""

from __future__ import annotations

import re

from sfu.errors import BadRequest

MAX_SDP_CHARS = 256 * 1024  # a Chrome offer with 16 simulcast tracks is ~60 KiB; far above that is abuse
MAX_LINE_CHARS = 4096  # the longest real lines are fmtp with sprop-parameter-sets (~300 chars)

_DIGITS = re.compile(r"[0-9]{1,10}")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+")
# Control characters other than TAB make the text binary, not SDP (CR/LF are split off first).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LINE = re.compile(r"([a-z])=(.*)")


def _uint(text: str, maximum: int, what: str) -> int:
    """A decimal in 0..maximum, ASCII digits only (int() also takes '+5', '1_0' and Arabic digits)."""
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{what} is not a number: {text!r}")
    value = int(text)
    if value > maximum:
        raise ValueError(f"{what} out of range: {value}")
    return value


def _lines(text: str | bytes) -> list[tuple[int, str, str]]:
    """(line number, type letter, value) for each non-empty line; BadRequest on non-SDP input."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_SDP_CHARS * 4:
            raise BadRequest(f"SDP too large ({len(text)} bytes)")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"SDP is not UTF-8 text (byte {exc.start})") from None
    if not isinstance(text, str):
        raise BadRequest("SDP must be text")
    if len(text) > MAX_SDP_CHARS:
        raise BadRequest(f"SDP too large ({len(text)} characters, limit {MAX_SDP_CHARS})")
    out = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip(" \t\r")
        if not line:
            continue
        if _CONTROL.search(line) or "\r" in line:
            raise BadRequest(f"line {number}: control characters (binary data, not SDP)")
        if len(line) > MAX_LINE_CHARS:
            raise BadRequest(f"line {number}: longer than {MAX_LINE_CHARS} characters")
        match = _LINE.fullmatch(line)
        if match is None:
            raise BadRequest(f"line {number}: not '<type>=<value>': {line[:40]!r}")
        out.append((number, match.group(1), match.group(2)))
    return out


def _split_attr(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"bad attribute name {name[:40]!r}")
    return name, (rest if colon else None)


def _need(name: str, value: str | None) -> str:
    if value is None or not value.strip():
        raise ValueError(f"a={name} has no value")
    return value.strip()
