"""A fake clock for deterministic tests of sans-IO code: time moves only when the test says.

    clock = FakeClock()
    machine = Something(clock=clock)   # anything that takes a `() -> float` clock or `now` values
    clock.advance(0.05)

`FakeClock()` is callable (returns `now`), so it stands in for `loop.time` or `time.monotonic`.
"""

from __future__ import annotations


class FakeClock:
    """Seconds as a float, starting at `start`; only `advance` and `set` change it."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` (>= 0); returns the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self.now = round(self.now + seconds, 9)
        return self.now

    def set(self, now: float) -> None:
        if now < self.now:
            raise ValueError("a clock does not go back")
        self.now = float(now)

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now})"
