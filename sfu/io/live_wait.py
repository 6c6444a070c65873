"""WHEP requests held open until their stream goes live (`whep_wait_for_publisher`).

The session manager decides whether a request may wait and for how long (`admit_viewer`); this shell
owns the waiting: one asyncio future per waiting request, and its timeout.
"""

from __future__ import annotations

import asyncio


class LiveWaiters:
    """Futures of the requests waiting for a publisher, by stream name.

    Driven by `wait(stream, timeout_s)` from a request handler, which suspends it, and
    `went_live(stream)`, the core's live notification (`SessionManager.add_live_listener`), which
    releases every request waiting on that stream. A request that is cancelled (its client went
    away) or times out leaves nothing behind.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}

    def went_live(self, stream: str) -> None:
        for future in self._waiting.pop(stream, ()):
            if not future.done():
                future.set_result(None)

    async def wait(self, stream: str, timeout_s: float) -> bool:
        """True once `stream` went live, False after `timeout_s` seconds without a publisher."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(stream, set()).add(future)
        try:
            await asyncio.wait_for(future, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            waiting = self._waiting.get(stream)
            if waiting is not None:
                waiting.discard(future)
                if not waiting:
                    del self._waiting[stream]

    def waiting(self, stream: str) -> int:
        """How many requests wait on `stream` (for tests and stats)."""
        return len(self._waiting.get(stream, ()))
