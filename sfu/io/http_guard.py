"""Slow and surplus HTTP clients: a deadline for request headers and a cap on open connections.

aiohttp on its own waits for a request's headers as long as its keep-alive timeout (about an hour
by default) and accepts connections until the process runs out of file descriptors; after that the
listening socket can no longer accept, `/healthz` included, and nothing says why. This guard sits on
aiohttp's connection events (`web_server.Server.connection_made` / `connection_lost`, which every
`RequestHandler` reports to) and decides:

- a new connection must complete its first request's headers within `header_timeout_s`, else it is
  closed (`dropped["header-timeout"]`); later requests on a kept-alive connection are bounded by
  aiohttp's keep-alive timeout (`HTTP_KEEPALIVE_S`, passed to the runner) and by eviction below;
- at most `max_connections` are open: one more evicts the oldest connection that is not inside a
  request (idle keep-alive, or still sending headers: `dropped["evicted"]`), so a health check or
  a real client always gets in while slow clients hold the slots; if every connection is inside a
  request, the new one is closed at once (`dropped["refused"]`);
- the cap defaults to the open-files limit less `RESERVED_FDS` (the media socket, the listening
  socket, files and what the event loop needs), at most `MAX_HTTP_CONNECTIONS_AUTO`, and
  `raise_open_files_limit()` first lifts the soft limit to the hard one where allowed.

Request bodies are bounded where they are read (`sfu.io.http`, `http_body_timeout_s`, 408). Drops
are counted (metrics `sfu_http_connections`, `sfu_http_connections_dropped_total{reason}`) and
logged at most once per `LOG_INTERVAL_S` with the counts since the last line.

aiohttp internals read here (pinned by tests/integration/test_floods.py): `RequestHandler.
_request_count` (requests whose headers were parsed on the connection) and `_request_in_progress`.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("sfu.http")

HTTP_KEEPALIVE_S = 75.0  # idle keep-alive connections close after this (nginx's default; aiohttp's is 3630)
RESERVED_FDS = 128  # descriptors kept out of the HTTP cap: media socket, listener, files, loop, logs
MAX_HTTP_CONNECTIONS_AUTO = 4096  # the automatic cap when the open-files limit is high
MIN_HTTP_CONNECTIONS = 16  # an automatic cap never goes below this
LOG_INTERVAL_S = 10.0  # at most one line about dropped connections this often


def raise_open_files_limit() -> tuple[int, int]:
    """Lift RLIMIT_NOFILE's soft limit to the hard limit (allowed without privileges). Returns the
    (soft, hard) limits in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard or hard == resource.RLIM_INFINITY and soft < 1 << 20:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
    return soft, hard


def automatic_cap(soft_limit: int) -> int:
    """The HTTP connection cap for an open-files limit: the limit less the reserve, within bounds."""
    return max(MIN_HTTP_CONNECTIONS, min(MAX_HTTP_CONNECTIONS_AUTO, soft_limit - RESERVED_FDS))


def _in_request(handler) -> bool:
    return bool(getattr(handler, "_request_in_progress", False))


def _requests_parsed(handler) -> int:
    return int(getattr(handler, "_request_count", 0))


class HttpGuard:
    """See the module docstring. `attach(server)` once the aiohttp runner is set up."""

    def __init__(self, header_timeout_s: float, max_connections: int,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not header_timeout_s > 0 or max_connections < 1:
            raise ValueError("header timeout > 0 and at least one connection")
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.dropped: Counter[str] = Counter()
        self._loop = loop
        # handler -> its header deadline timer (None once the first request's headers came); in
        # opening order, oldest first (eviction takes the oldest idle one)
        self._open: dict[object, asyncio.TimerHandle | None] = {}
        self._logged: Counter[str] = Counter()
        self._log_at = 0.0

    def __len__(self) -> int:
        return len(self._open)

    def attach(self, server) -> None:
        """Hook `server` (aiohttp's `web_server.Server`): its handlers report to these methods."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler, transport) -> None:
            made(handler, transport)
            self.opened(handler)

        def connection_lost(handler, exc=None) -> None:
            self.closed(handler)
            lost(handler, exc)

        server.connection_made = connection_made
        server.connection_lost = connection_lost

    # -- connection events --------------------------------------------------------------------

    def opened(self, handler) -> None:
        loop = self._loop or asyncio.get_running_loop()
        if len(self._open) >= self.max_connections and not self._evict_idle():
            # closed on the next loop iteration: aiohttp starts the handler's task right after this
            # call, and that task must not find its connection already torn down
            loop.call_soon(self._drop, handler, "refused")
            return
        self._open[handler] = loop.call_later(self.header_timeout_s, self._header_deadline, handler,
                                              _requests_parsed(handler))

    def closed(self, handler) -> None:
        timer = self._open.pop(handler, None)
        if timer is not None:
            timer.cancel()

    # -- decisions ------------------------------------------------------------------------------

    def _header_deadline(self, handler, parsed_before: int) -> None:
        if handler not in self._open:
            return
        self._open[handler] = None
        if _requests_parsed(handler) == parsed_before and not _in_request(handler):
            self._drop(handler, "header-timeout")

    def _evict_idle(self) -> bool:
        for handler in self._open:  # oldest first
            if not _in_request(handler):
                self._drop(handler, "evicted")
                return True
        return False

    def _drop(self, handler, reason: str) -> None:
        self.closed(handler)
        self.dropped[reason] += 1
        self._logged[reason] += 1
        handler.force_close()
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        if now >= self._log_at:
            self._log_at = now + LOG_INTERVAL_S
            counts = ", ".join(f"{n} {r}" for r, n in sorted(self._logged.items()))
            log.warning("HTTP connections dropped (%s); %d open, cap %d, header timeout %g s",
                        counts, len(self._open), self.max_connections, self.header_timeout_s)
            self._logged.clear()

    def metrics(self):
        gauge = GaugeMetricFamily("sfu_http_connections", "Open HTTP connections")
        gauge.add_metric([], len(self._open))
        yield gauge
        dropped = CounterMetricFamily(
            "sfu_http_connections_dropped", "HTTP connections closed by the server's guard: headers too "
            "slow (header-timeout), oldest idle one at the cap (evicted), all busy at the cap (refused)",
            labels=["reason"])
        for reason in ("header-timeout", "evicted", "refused"):
            dropped.add_metric([reason], self.dropped[reason])
        yield dropped
