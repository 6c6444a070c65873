"""Bandwidth estimate for a viewer that negotiated REMB but not transport-wide feedback.

Such a viewer runs its own receive-side estimator (libwebrtc's abs-send-time estimator: arrival
delay trend and AIMD on the receiver) and reports the result in REMB messages
(draft-alvestrand-rmcat-remb-03 §2.2), about once a second and at once when it drops. Without
per-packet feedback the server cannot see delay itself, so this estimate is built from what the
viewer does send:

- the REMB value is the delay-based estimate, taken as it comes (the receiver already smoothed it;
  a REMB below what we send is the receiver's own congestion verdict);
- receiver-report loss (RFC 3550 §6.4.1 fraction lost, of the viewer's video) bounds it as
  gcc-02 §6 does for send-side estimates: above 10 % cut by half the loss fraction, below 2 % the
  bound grows again (8 %/s) and is lifted once 1.5x above the REMB value;
- probes: padding as for any viewer (`ViewerRateControl`); one counts as a success when a REMB
  within `PROBE_WAIT_S` after its end reaches `PROBE_SUCCESS_RATIO` of its target. libwebrtc's
  receiver grows its estimate ~8 %/s and caps it at 1.5x what it receives, so a REMB-only viewer
  climbs layers more slowly than a transport-cc one; downward it follows each REMB at once.

Inputs (with `now`, seconds on the server's clock): `on_remb(bps, now)`, `on_loss(fraction, now)`,
`start_probe(...)`, `poll(now)`. Outputs: the `SendSideBwe` surface the allocator reads
(`estimate_bps`, `signal`, `congested`, probe results, `stats`). Sans-IO.
"""

from __future__ import annotations

from .bwe import (
    INCREASE_PER_S,
    LOSS_DECREASE_INTERVAL_S,
    LOSS_HIGH,
    LOSS_LOW,
    MAX_BPS,
    MIN_BPS,
    NORMAL,
    OVERUSE,
    PROBE_SUCCESS_RATIO,
    ProbeResult,
    Summary,
)

PROBE_WAIT_S = 1.5  # REMBs come about once a second: wait this long after a probe for one
LOSS_STALE_S = 5.0  # no receiver report this long: the last loss figure no longer counts
DROP_RATIO = 0.9  # a REMB below this share of the previous one is an overuse signal (stats, probes)


class RembEstimate:
    """The bandwidth estimate towards one REMB-only viewer (see the module docstring)."""

    def __init__(self, initial_bps: float, now: float) -> None:
        self.remb_bps = float(initial_bps)  # until the first REMB: the optimistic start
        self.loss_bps = float("inf")
        self.loss = 0.0
        self.last_remb_at: float | None = None
        self.last_loss_at: float | None = None
        self._last_loss_update = now
        self.last_loss_decrease: float | None = None
        self.rembs = 0
        self.reports = 0
        self.drops = 0
        self._signal = NORMAL
        self._probe: dict | None = None
        self._probe_result: ProbeResult | None = None
        self.probes = 0
        self.probes_succeeded = 0

    # -- the SendSideBwe surface -----------------------------------------------------------------

    @property
    def estimate_bps(self) -> float:
        return max(MIN_BPS, min(self.remb_bps, self.loss_bps, MAX_BPS))

    @property
    def signal(self) -> str:
        return self._signal

    @property
    def loss_fraction(self) -> float:
        return self.loss

    @property
    def acked_bps(self) -> float:
        return 0.0  # no per-packet feedback: nothing is acknowledged

    def congested(self, now: float) -> bool:
        """A REMB is the receiver's own verdict: once one came, a layer it does not fit is short."""
        return self.last_remb_at is not None or self.loss > LOSS_HIGH

    def on_feedback_summary(self, summary: Summary, now: float) -> None:
        """Transport-wide feedback was not negotiated: nothing to do with one (never called)."""

    def probe_window(self) -> tuple[float, float]:
        return float("inf"), float("-inf")  # no per-packet feedback to split a probe out of

    # -- inputs ----------------------------------------------------------------------------------

    def on_remb(self, bps: float, now: float) -> None:
        self.rembs += 1
        previous = self.remb_bps if self.last_remb_at is not None else None
        self._signal = OVERUSE if previous is not None and bps < previous * DROP_RATIO else NORMAL
        if self._signal == OVERUSE:
            self.drops += 1
        self.remb_bps = float(bps)
        self.last_remb_at = now
        if self.loss_bps != float("inf") and self.loss_bps > self.remb_bps * 1.5:
            self.loss_bps = float("inf")
        probe = self._probe
        if probe is not None and now >= probe["start"]:
            probe["best"] = max(probe["best"], float(bps))
            if self._signal == OVERUSE:
                probe["overuse"] = True

    def on_loss(self, fraction: float, now: float) -> None:
        """One receiver report's fraction lost (0..1) for the viewer's video."""
        self.reports += 1
        self.loss = fraction
        self.last_loss_at = now
        if fraction > LOSS_HIGH:
            if self.last_loss_decrease is None or now - self.last_loss_decrease >= LOSS_DECREASE_INTERVAL_S:
                current = min(self.remb_bps, self.loss_bps)
                self.loss_bps = current * (1 - 0.5 * fraction)
                self.last_loss_decrease = now
        elif fraction < LOSS_LOW and self.loss_bps != float("inf"):
            dt = min(max(now - self._last_loss_update, 0.0), 1.0)
            self.loss_bps *= INCREASE_PER_S**dt
            if self.loss_bps > self.remb_bps * 1.5:
                self.loss_bps = float("inf")
        self._last_loss_update = now

    # -- probes ----------------------------------------------------------------------------------

    def start_probe(self, target_bps: float, start: float, end: float) -> None:
        self.probes += 1
        self._probe = {"target": target_bps, "start": start, "end": end, "best": 0.0, "overuse": False}

    def take_probe_result(self) -> ProbeResult | None:
        result, self._probe_result = self._probe_result, None
        return result

    def probe_losses(self) -> int:
        return 0

    def end_probe_early(self, now: float) -> None:
        if self._probe is not None:
            self._probe["end"] = min(self._probe["end"], now)

    @property
    def probing(self) -> bool:
        return self._probe is not None

    @property
    def has_probe_result(self) -> bool:
        return self._probe_result is not None

    def poll(self, now: float) -> None:
        """Timers: conclude a probe once a REMB reached its target or `PROBE_WAIT_S` passed; forget
        a loss figure no report has renewed."""
        if self.last_loss_at is not None and now - self.last_loss_at > LOSS_STALE_S:
            self.loss = 0.0
        probe = self._probe
        if probe is None:
            return
        reached = probe["best"] >= PROBE_SUCCESS_RATIO * probe["target"] and not probe["overuse"]
        if reached or now > probe["end"] + PROBE_WAIT_S:
            self._probe = None
            if reached:
                self.probes_succeeded += 1
            self._probe_result = ProbeResult(reached, probe["target"], probe["best"], probe["target"])

    def stats(self) -> dict[str, object]:
        return {
            "feedback": "remb",
            "estimate_bps": int(self.estimate_bps),
            "remb_bps": int(min(self.remb_bps, MAX_BPS)),
            "loss_bps": None if self.loss_bps == float("inf") else int(self.loss_bps),
            "loss_fraction": round(self.loss, 4),
            "signal": self.signal,
            "rembs": self.rembs,
            "remb_drops": self.drops,
            "receiver_reports": self.reports,
            "probes": self.probes,
            "probes_succeeded": self.probes_succeeded,
        }
