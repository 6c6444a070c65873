"""Give freed heap memory back to the system after many sessions have ended (glibc `malloc_trim`).

A closed session is freed at once (no reference cycles: tests/integration/test_floods.py counts the
live objects), but glibc keeps the freed pages in its heap for reuse, so the process's RSS stays at
its peak after a burst of sessions ends: 1,000 sessions created and deleted leave about +30 MB of
RSS of which `malloc_trim(0)` returns about 19 MB (the rest is pymalloc arenas still partly used,
and fragmentation; bench/leak_rounds.py measures it). That is no leak (the next burst reuses it),
but an operator reading RSS cannot tell, so after a burst the heap is trimmed.

Driven by `poll(closed_total, now)` from a slow periodic task (`CHECK_INTERVAL_S`): it trims when
at least `TRIM_AFTER_CLOSES` sessions have ended since the last trim and the last trim is at least
`MIN_INTERVAL_S` old. A trim walks the heap with the event loop blocked (measured 3-15 ms at
~150 MB): hence the thresholds. Where glibc is not the allocator it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("sfu.memory")

CHECK_INTERVAL_S = 5.0  # how often the server's task polls
TRIM_AFTER_CLOSES = 200  # sessions ended since the last trim before another is worth its pause
MIN_INTERVAL_S = 10.0  # at most one trim (a few ms with the loop blocked) this often


def _glibc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # musl, macOS: no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """See the module docstring. `trims` counts the trims done."""

    def __init__(self, trim: Callable[[int], int] | None = None, *, after_closes: int = TRIM_AFTER_CLOSES,
                 min_interval_s: float = MIN_INTERVAL_S) -> None:
        self._trim = trim if trim is not None else _glibc_trim()
        self.after_closes = after_closes
        self.min_interval_s = min_interval_s
        self.trims = 0
        self._closed_at_last = 0
        self._last = float("-inf")

    @property
    def available(self) -> bool:
        return self._trim is not None

    def poll(self, closed_total: int, now: float) -> bool:
        """True if it trimmed now."""
        if self._trim is None or closed_total - self._closed_at_last < self.after_closes:
            return False
        if now - self._last < self.min_interval_s:
            return False
        self._closed_at_last = closed_total
        self._last = now
        self._trim(0)
        self.trims += 1
        return True
