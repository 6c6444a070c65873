"""Bounded, credential-free logs: a `logging.Filter` that redacts secrets and rate-limits per cause.

A hostile client can make the server log on every request (a traceback per malformed request, a
warning per bad datagram); without a bound that is a disk-filling attack, and a traceback or message
that quotes the request can carry its bearer token. `LogGuard` is driven by the records that pass
through the loggers it is installed on:

- Redaction: the formatted message, the exception text and the stack text have JWTs, `Bearer`
  credentials, `Authorization` values, `token=` parameters and SDP `a=ice-pwd` lines replaced by
  `[redacted]` before any handler sees them; an exception text is also cut at `MAX_EXC_TEXT`
  characters.
- A request aiohttp could not parse (an `HttpProcessingError` with a 4xx code, answered 400, or a
  body that could not be decoded) is the client's fault, not the server's: its ERROR record
  becomes INFO.
- Rate limit per cause: a cause is (logger, message template, exception type). Each cause of a
  WARNING or worse, or of any record with a traceback, may log `burst` records per `window_s`
  (plain INFO/DEBUG lines, one per session event, are only redacted: they cannot be had for free); further records in the window are dropped and counted
  (`suppressed[cause]`, `suppressed_total`), and the next record let through says how many were
  dropped. At most `MAX_CAUSES` causes are remembered (then the table starts over), so the filter's
  own memory is bounded too.

`install()` puts one shared guard on the `sfu` loggers and aiohttp's server loggers (a logger's
filter sees only records created on that logger, so each is named).
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable

from aiohttp.http_exceptions import HttpProcessingError

REDACTED = "[redacted]"
BURST = 5  # records per cause per window: enough to see a problem, too few to fill a disk
WINDOW_S = 60.0
MAX_CAUSES = 1024
MAX_EXC_TEXT = 8192  # characters of one traceback kept (the innermost frames are at the end)
AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal")

_SECRETS = [
    # a JWT (RFC 7519 §7.2: base64url header "eyJ..." . payload . signature), anywhere
    (re.compile(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*)?"), REDACTED),
    # RFC 6750 §2.1 `Bearer <credential>` and any `Authorization` header value as printed in a repr
    (re.compile(r"(?i)(bearer\s+)[^\s'\",;]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)((?:access_)?token['\"]?\s*[:=]\s*['\"]?)[^\s'\"&,;]+"), r"\1" + REDACTED),
    # RFC 8839 §5.4 ICE password in an SDP that a message may quote
    (re.compile(r"(a=ice-pwd:)\S+"), r"\1" + REDACTED),
]


def redact(text: str) -> str:
    """`text` with every credential pattern above replaced."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class LogGuard(logging.Filter):
    """Redacts credentials and lets each cause log `burst` records per `window_s` (see the module
    docstring). `clock` is injectable so tests drive the window without sleeping."""

    def __init__(self, burst: int = BURST, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic,
                 limit_from: int = logging.WARNING) -> None:
        super().__init__()
        self.limit_from = limit_from
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self.suppressed: Counter[tuple[str, str, str]] = Counter()
        self.suppressed_total = 0
        self._windows: dict[tuple[str, str, str], tuple[float, int]] = {}  # cause -> (window start, count)
        self._pending: Counter[tuple[str, str, str]] = Counter()  # dropped since the cause last logged

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.limit_from and not record.exc_info:
            self._scrub(record, 0)
            return True
        cause = self.cause(record)
        now = self.clock()
        start, count = self._windows.get(cause, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        if count >= self.burst:
            self._windows[cause] = (start, count)
            self.suppressed[cause] += 1
            self._pending[cause] += 1
            self.suppressed_total += 1
            return False
        if len(self._windows) >= MAX_CAUSES and cause not in self._windows:
            self._windows.clear()
            self._pending.clear()
        self._windows[cause] = (start, count + 1)
        if record.exc_info and _client_fault(record.exc_info[1]) and record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
        self._scrub(record, self._pending.pop(cause, 0))
        return True

    @staticmethod
    def cause(record: logging.LogRecord) -> tuple[str, str, str]:
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        return record.name, str(record.msg), exc_type

    @staticmethod
    def _scrub(record: logging.LogRecord, dropped: int) -> None:
        if getattr(record, "_sfu_scrubbed", False):  # a record seen by two guarded loggers
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log what we have rather than raise in logging
            message = f"{record.msg!r} {record.args!r}"
        if dropped:
            message += f" ({dropped} similar messages suppressed)"
        record.msg, record.args = redact(message), ()
        if record.exc_info and record.exc_info[0] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            if len(text) > MAX_EXC_TEXT:
                text = "... (traceback cut)\n" + text[-MAX_EXC_TEXT:]
            record.exc_text = redact(text)
            # handlers format exc_text when set; exc_info is dropped so none re-renders the raw one
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._sfu_scrubbed = True  # type: ignore[attr-defined]


def _client_fault(exc: BaseException | None) -> bool:
    """A 4xx parse error, or aiohttp's RequestPayloadError caused by one (re-raised when aiohttp
    drains a corrupt body after the response, and logged by it as "Unhandled exception")."""
    for _ in range(4):
        if exc is None:
            return False
        if isinstance(exc, HttpProcessingError):
            return 400 <= (exc.code or 0) < 500
        exc = exc.__cause__
    return False


_guard: LogGuard | None = None


def install(extra_loggers: Iterable[str] = ()) -> LogGuard:
    """Put the process's guard on every `sfu` logger that exists now, aiohttp's server loggers and
    `extra_loggers`; idempotent. Returns the guard (its counters are the suppressed records)."""
    global _guard
    if _guard is None:
        _guard = LogGuard()
    names = {"sfu", *AIOHTTP_LOGGERS, *extra_loggers}
    names.update(n for n in logging.root.manager.loggerDict if n == "sfu" or n.startswith("sfu."))
    for name in names:
        logger = logging.getLogger(name)
        if _guard not in logger.filters:
            logger.addFilter(_guard)
    return _guard


__all__ = ["BURST", "LogGuard", "REDACTED", "WINDOW_S", "install", "redact"]
