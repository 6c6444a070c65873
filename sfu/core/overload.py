"""The overload guard: when the server cannot keep up, it sends less video, before its socket holds
seconds of media.

Driven by `update(now, queue_delay_s, bytes_out, viewers)` once per layer-control tick
(`SimulcastControl.tick`): `queue_delay_s` is the longest time a datagram waited in the media
socket since the last update (`Router.take_queue_delay`, from kernel receive timestamps),
`bytes_out` the router's cumulative bytes sent, `viewers` how many viewers share them. Output:
`ceiling_bps`, a bitrate no viewer's video is allocated above (None: no ceiling). The layer control
applies it to every viewer's `ViewerRateControl`: viewers above it step down at the lower layer's
next keyframe, new viewers start below it, nobody probes above it. `update` returns True when the
ceiling changed enough for viewers to decide again: every cut, every `ANNOUNCE_STEP` of growth, the
lift.

Why the bandwidth estimate cannot do this: the wait happens before the server sends, so the
viewers' transport-cc feedback shows no growing delay; the estimate only falls once the overload
has become loss, and a server whose socket buffer holds seconds of media has already failed its
viewers (and, with its control traffic in the same queue, every joining one).

Rules (additive-increase / multiplicative-decrease on the server's own capacity):
- overloaded: the wait exceeded `high_s` in `OVERLOAD_UPDATES` consecutive updates. Then, at most
  once per `CUT_INTERVAL_S` (a step down waits for a keyframe), the ceiling becomes `CUT_FACTOR` x
  the smaller of the ceiling and the current per-viewer share of the output, not below
  `MIN_CEILING_BPS` (audio is never limited);
- calm: the wait stayed under `high_s * CALM_SHARE` for `RECOVER_AFTER_S`. Then the ceiling grows
  by `RAISE_PER_S` a second, and is lifted once above `MAX_CEILING_BPS`.
"""

from __future__ import annotations

OVERLOAD_UPDATES = 3  # consecutive updates over the limit (150 ms at the 50 ms tick): not a blip
CUT_INTERVAL_S = 1.0
CUT_FACTOR = 0.7
MIN_CEILING_BPS = 100_000
CALM_SHARE = 0.25
RECOVER_AFTER_S = 2.0
RAISE_PER_S = 0.25  # relative growth per second of calm (100 kbit/s to 2.5 Mbit/s in ~14 s)
MAX_CEILING_BPS = 50_000_000
ANNOUNCE_STEP = 1.1  # growth announced when the ceiling is this much above the one last announced


class OverloadGuard:
    """See the module docstring. `high_s` <= 0 turns the guard off (never a ceiling)."""

    def __init__(self, high_s: float) -> None:
        self.high_s = high_s
        self.ceiling_bps: float | None = None
        self.cuts = 0
        self.last_delay_s = 0.0
        self.max_delay_s = 0.0
        self.overloaded_updates = 0  # updates over the limit, in all
        self._over = 0  # consecutive updates over the limit
        self._calm_since: float | None = None
        self._next_cut_at = 0.0
        self._last_at: float | None = None
        self._last_bytes = 0
        self._out_bps = 0.0
        self._announced: float | None = None

    @property
    def limit_bps(self) -> float:
        """The ceiling as `ViewerRateControl.ceiling_bps` takes it (infinity: none)."""
        return self.ceiling_bps if self.ceiling_bps is not None else float("inf")

    @property
    def enabled(self) -> bool:
        return self.high_s > 0

    def update(self, now: float, queue_delay_s: float, bytes_out: int, viewers: int) -> bool:
        self.last_delay_s = queue_delay_s
        self.max_delay_s = max(self.max_delay_s, queue_delay_s)
        dt = now - self._last_at if self._last_at is not None else 0.0
        if dt > 0:
            self._out_bps = (bytes_out - self._last_bytes) * 8 / dt
        self._last_at, self._last_bytes = now, bytes_out
        if not self.enabled:
            return False
        if queue_delay_s > self.high_s:
            self._over += 1
            self.overloaded_updates += 1
            self._calm_since = None
            if self._over >= OVERLOAD_UPDATES and now >= self._next_cut_at and viewers > 0:
                share = self._out_bps / viewers
                base = share if self.ceiling_bps is None else min(self.ceiling_bps, share)
                self.ceiling_bps = max(MIN_CEILING_BPS, base * CUT_FACTOR)
                self._next_cut_at = now + CUT_INTERVAL_S
                self.cuts += 1
                return self._announce()
            return False
        self._over = 0
        if queue_delay_s > self.high_s * CALM_SHARE:
            self._calm_since = None
            return False
        if self._calm_since is None:
            self._calm_since = now
        if self.ceiling_bps is None or now - self._calm_since < RECOVER_AFTER_S or dt <= 0:
            return False
        self.ceiling_bps *= 1 + RAISE_PER_S * dt
        if self.ceiling_bps > MAX_CEILING_BPS:
            self.ceiling_bps = None
            return self._announce()
        if self._announced is not None and self.ceiling_bps >= self._announced * ANNOUNCE_STEP:
            return self._announce()
        return False

    def _announce(self) -> bool:
        self._announced = self.ceiling_bps
        return True

    def stats(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "limit_ms": round(self.high_s * 1000, 1),
            "ceiling_bps": int(self.ceiling_bps) if self.ceiling_bps is not None else None,
            "cuts": self.cuts,
            "queue_delay_ms": round(self.last_delay_s * 1000, 2),
            "queue_delay_max_ms": round(self.max_delay_s * 1000, 2),
            "overloaded_ticks": self.overloaded_updates,
        }
