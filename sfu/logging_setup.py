"""Log set-up for `sfu serve`: text or JSON lines, stream and session ids on every line that has one,
and one access-log line per WHIP/WHEP request.

The stream and session (its public id, `sfu.core.sessions.public_id`, never the secret URL id) come
from a log call's `extra={"stream": ..., "session": ...}` or, for everything logged while an HTTP
request is handled, from the request (`request_context`, set by `access_middleware`). JSON lines are
written by python-json-logger: `time`, `level`, `logger`, `message`, `stream`, `session` and any
other `extra` fields.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from aiohttp import web

from .core.sessions import public_id

CONTEXT_FIELDS = ("stream", "session")
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("sfu_log_context", default=None)
access_log = logging.getLogger("sfu.access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"


class ContextFilter(logging.Filter):
    """Gives every record `stream` and `session` (None when it has neither) and, for text, `context`."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get() or {}
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, context.get(name))
        parts = [f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name) is not None]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


def json_formatter() -> logging.Formatter:
    try:
        from pythonjsonlogger.json import JsonFormatter  # python-json-logger >= 3.1
    except ImportError:  # pragma: no cover - older python-json-logger
        from pythonjsonlogger.jsonlogger import JsonFormatter  # type: ignore[no-redef]
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(stream)s %(session)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        reserved_attrs=[*_RESERVED, "context"],
    )


_RESERVED = [
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName", "levelname", "levelno", "lineno",
    "module", "msecs", "message", "msg", "name", "pathname", "process", "processName", "relativeCreated",
    "stack_info", "thread", "threadName", "taskName",
]


def configure(level: str = "info", fmt: str = "text", stream=None) -> logging.Handler:
    """Send the root logger's records to `stream` (stderr) as text or JSON lines; returns the handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_sfu", False)]:
        root.removeHandler(old)
    handler._sfu = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def _signalling(path: str) -> tuple[str, str] | None:
    """("whip" | "whep", stream) for a WHIP/WHEP path, else None."""
    parts = path.split("/")
    if len(parts) >= 3 and parts[1] in ("whip", "whep") and parts[2]:
        return parts[1], parts[2]
    return None


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One `sfu.access` line per WHIP/WHEP request (method, kind, status, duration, client), with
    the stream and the session's public id, which also go on every line logged meanwhile."""
    target = _signalling(request.path)
    if target is None:
        return await handler(request)
    kind, stream = target
    parts = request.path.split("/")
    context = {"stream": stream[:128]}
    if len(parts) >= 4 and parts[3]:
        context["session"] = public_id(unquote(parts[3]))
    token = _context.set(context)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        location = response.headers.get("Location") if status == 201 else None
        if location:
            context["session"] = public_id(unquote(location.rsplit("/", 1)[1]))
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        duration_ms = (time.perf_counter() - started) * 1000
        access_log.info(
            "%s %s %d %.1f ms %s", request.method, kind, status, duration_ms, request.remote,
            extra={"method": request.method, "kind": kind, "status": status,
                   "duration_ms": round(duration_ms, 1), "remote": request.remote},
        )
        _context.reset(token)


__all__ = ["ContextFilter", "access_middleware", "configure", "json_formatter"]
