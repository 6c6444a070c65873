"""Graceful drain: stop taking new sessions, let the existing ones run out, then close what is left.

Driven by `start(deadline_s)` (the first SIGTERM to `sfu serve`, or `POST /admin/drain`) and by the
session count it polls: the drain is done when no session is left or the deadline has passed,
whichever comes first; then every remaining session is closed and `done` is set (`sfu serve` exits
0 on it). While draining, a new WHIP/WHEP POST is answered 503 with `Retry-After` (the seconds left
until the deadline, at least 1) and `/readyz` is 503; `/healthz` stays 200 (the process is alive).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from ..core.events import DrainStarted

log = logging.getLogger("sfu.drain")

POLL_S = 0.2  # how often the session count is looked at while draining


class Drainable(Protocol):
    sessions: dict  # live sessions by id

    def close_all(self, reason: str) -> None: ...


class Drain:
    """One node's drain state. `clock` is monotonic seconds (the event loop's time in the server)."""

    def __init__(self, default_deadline_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.default_deadline_s = default_deadline_s
        self.clock = clock
        self.deadline: float | None = None  # set once draining
        self.reason = ""
        self.done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        return self.deadline is not None

    def retry_after(self) -> int:
        """Seconds a refused client should wait: until the deadline (then this node is gone)."""
        left = (self.deadline - self.clock()) if self.deadline is not None else 0.0
        return max(1, math.ceil(left))

    def start(self, sessions: Drainable, deadline_s: float | None = None, reason: str = "drain") -> bool:
        """Begin draining (needs a running event loop); False if a drain was already under way
        (its deadline stays)."""
        if self.draining:
            return False
        seconds = self.default_deadline_s if deadline_s is None else deadline_s
        self.deadline = self.clock() + seconds
        self.reason = reason
        log.info("draining (%s): no new sessions; %d open, closing what is left in %.0f s",
                 reason, len(sessions.sessions), seconds)
        self._task = asyncio.get_running_loop().create_task(self._run(sessions))
        events = getattr(sessions, "events", None)  # the session manager's outbox: a drain.started webhook
        if events is not None:
            events.emit(DrainStarted(self.clock(), "", reason))
        return True

    async def _run(self, sessions: Drainable) -> None:
        assert self.deadline is not None
        while sessions.sessions and self.clock() < self.deadline:
            await asyncio.sleep(min(POLL_S, max(0.0, self.deadline - self.clock())))
        left = len(sessions.sessions)
        if left:
            log.info("drain deadline passed: closing %d session(s)", left)
            sessions.close_all("server drained")
        else:
            log.info("drained: no sessions left")
        self.done.set()

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


__all__ = ["Drain", "Drainable"]
