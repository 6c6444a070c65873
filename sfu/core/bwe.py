"""Send-side bandwidth estimate for one viewer, from its transport-wide congestion control feedback.

In the spirit of Google Congestion Control (draft-ietf-rmcat-gcc-02, libwebrtc's
`goog_cc`): packets are grouped by send time, the inter-group delay variation feeds a trendline
filter, an overuse detector with an adaptive threshold turns the trend into a signal, and an AIMD
rate controller turns the signal into a rate. A loss-based bound (§6) caps it when feedback reports
heavy loss. Probes (padding sent on purpose, see `sfu/core/allocator.py`) measure headroom the
media alone cannot show: a probe that arrives as fast as it left raises the estimate at once.

Inputs (all with `now`, seconds on the server's clock): `on_feedback_summary(summary, now)` with
what one viewer RTCP compound's feedback says, summarised per send burst by the fast path
(`_fastpath.FeedbackAggregator`, sfu/_twcc.pxi; no object per packet), or `on_feedback(results,
now)` with matched per-packet records (tests, simulations: summarised here by the pure-Python
`twcc.SummaryBuilder`, the same contract), and `start_probe(...)`. Outputs: `estimate_bps`,
`acked_bps`, `signal`, `take_probe_result()`. Sans-IO: no clock, no socket. The per-burst work
(trendline, acknowledged rate, delivery ratio, loss fraction) is one call into C per feedback
(`_fastpath.EstimatorWindows`, sfu/_estimator.pxi; its Python twin is `bwe_reference.ReferenceWindows`);
what is left here runs once per feedback: AIMD, the loss bound, probes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from .. import _fastpath

BURST_S = 0.005  # packets sent within this of a group's first are one group (libwebrtc kBurstDeltaThreshold)
TRENDLINE_WINDOW = 20  # groups in the linear fit
TRENDLINE_SMOOTHING = 0.9  # exponential smoothing of the accumulated delay
TRENDLINE_GAIN = 4.0  # libwebrtc kDefaultTrendlineThresholdGain
MAX_DELTAS = 60  # the trend is scaled by min(deltas, this)
THRESHOLD_INITIAL_MS = 12.5  # overuse threshold start (gcc-02 §5.4: del_var_th)
THRESHOLD_MIN_MS, THRESHOLD_MAX_MS = 6.0, 600.0
K_UP, K_DOWN = 0.0087, 0.039  # adaptive threshold gains (gcc-02 §5.4)
OVERUSE_TIME_S = 0.01  # the trend must stay over the threshold this long
BETA = 0.85  # multiplicative decrease of the acknowledged rate on overuse (gcc-02 §6)
DECREASE_INTERVAL_S = 0.2  # at most one decrease per (roughly) round trip
INCREASE_PER_S = 1.08  # multiplicative increase far from the last congestion point
ADDITIVE_INCREASE_BPS_PER_S = 60_000  # near it: about one packet per response time
ACKED_WINDOW_S = 0.5  # receive-rate window
ACKED_CAP_FACTOR = 1.5  # never increase above this times what arrives (plus the constant below)
ACKED_CAP_EXTRA_BPS = 10_000
LOSS_WINDOW_S = 1.0
LOSS_HIGH, LOSS_LOW = 0.10, 0.02  # gcc-02 §6: decrease above 10 %, increase below 2 %
LOSS_DECREASE_INTERVAL_S = 0.3
MIN_BPS = 50_000
MAX_BPS = 50_000_000
PROBE_SUCCESS_RATIO = 0.9  # a probe counts when this share of its send rate arrived
PROBE_MAX_LOSS = 0.05
PROBE_TIMEOUT_S = 1.0  # after the probe's end, give up waiting for its feedback
DELIVERY_WINDOW_S = 1.0  # send-time span over which arrival spread is compared with send spread
CONGESTED_DELIVERY_RATIO = 0.9  # the link delivers less than this share of what we send: congested
CONGESTED_LOSS = 0.05
CONGESTED_DECREASES = 2  # this many delay-based decreases within the window below: congested
CONGESTED_DECREASE_WINDOW_S = 2.0

NORMAL, OVERUSE, UNDERUSE = "normal", "overuse", "underuse"
_SIGNAL_NAMES = (NORMAL, OVERUSE, UNDERUSE)  # by `Windows.signal`


@dataclass(slots=True)
class PacketResult:
    """One sent packet as feedback reported it. Arrival times are on the receiver's clock."""

    send_time: float
    arrival_time: float | None  # None: reported lost
    size: int
    padding: bool = False


class Summary(Protocol):
    """One feedback's summary: `_fastpath.FeedbackSummary` or `twcc.FeedbackSummary`."""

    feedbacks: int
    matched: int
    lost: int
    max_send: float
    continues_group: bool
    bursts: list[tuple[float, float, float, float, int, int]]
    probe_count: int
    probe_lost: int
    probe_bytes: int
    probe_first_size: int
    probe_first_send: float
    probe_first_arrival: float
    probe_last_send: float
    probe_last_arrival: float


class Windows(Protocol):
    """The per-burst part of the estimate: `_fastpath.EstimatorWindows` (C) or its Python twin
    `bwe_reference.ReferenceWindows`."""

    signal: int  # index into (NORMAL, OVERUSE, UNDERUSE)
    acked_bps: float
    delivery_ratio: float
    loss_fraction: float
    threshold_ms: float

    def add(self, bursts: list, continues: bool, matched: int, lost: int, now: float) -> bool: ...
    def clear_probe(self) -> None: ...


@dataclass(slots=True)
class ProbeResult:
    success: bool
    sent_bps: float
    delivered_bps: float
    target_bps: float


class SendSideBwe:
    """The bandwidth estimate towards one viewer (all its media on one transport)."""

    def __init__(self, initial_bps: float, now: float, windows: Windows | None = None) -> None:
        """`windows`: the per-burst part (default the C `_fastpath.EstimatorWindows`; tests may pass
        `bwe_reference.ReferenceWindows`, its Python twin)."""
        self.delay_bps = float(initial_bps)
        self.loss_bps = float("inf")
        self.windows: Windows = windows if windows is not None else _fastpath.EstimatorWindows()
        self.state = "increase"
        self.last_change = now
        self.last_decrease: float | None = None
        self.last_loss_decrease: float | None = None
        self._last_loss_update = now
        self.link_capacity_bps: float | None = None  # acknowledged rate at the last decrease
        self._decrease_times: deque[float] = deque()
        self._reference: Any = None  # twcc.SummaryBuilder behind on_feedback(), made when first used
        self.decreases = 0
        self.overuse_events = 0
        self._probe: dict | None = None
        self._probe_result: ProbeResult | None = None
        self.probes = 0
        self.probes_succeeded = 0

    @property
    def estimate_bps(self) -> float:
        return max(MIN_BPS, min(self.delay_bps, self.loss_bps, MAX_BPS))

    @property
    def signal(self) -> str:
        return _SIGNAL_NAMES[self.windows.signal]

    @property
    def acked_bps(self) -> float:
        """Received rate over the last `ACKED_WINDOW_S` of arrivals."""
        return self.windows.acked_bps

    @property
    def loss_fraction(self) -> float:
        return self.windows.loss_fraction

    @property
    def delivery_ratio(self) -> float:
        return self.windows.delivery_ratio

    # -- inputs ----------------------------------------------------------------------------------

    def on_feedback(self, results: list[PacketResult], now: float) -> None:
        """Matched per-packet records of one feedback, in send order (tests and simulations)."""
        if self._reference is None:
            from .twcc import SummaryBuilder  # twcc imports this module

            self._reference = SummaryBuilder()
        self.on_feedback_summary(self._reference.summarize(results, *self.probe_window()), now)

    def probe_window(self) -> tuple[float, float]:
        """Send-time window (inclusive) of the probe under way, for the summariser: packets sent
        in it are summed apart. Empty (inf, -inf) when not probing."""
        if self._probe is None:
            return float("inf"), float("-inf")
        return self._probe["start"], self._probe["end"]

    def on_feedback_summary(self, summary: Summary, now: float) -> None:
        overused = self.windows.add(summary.bursts, summary.continues_group, summary.matched, summary.lost, now)
        probe = self._probe
        if probe is not None:
            if summary.probe_count:
                if probe["first_send"] is None:  # the first packet opens the interval
                    probe["first_send"] = summary.probe_first_send
                    probe["first_arrival"] = summary.probe_first_arrival
                    probe["bytes"] += summary.probe_bytes
                else:
                    probe["bytes"] += summary.probe_bytes + summary.probe_first_size
                probe["last_send"] = max(probe["last_send"], summary.probe_last_send)
                probe["last_arrival"] = max(probe["last_arrival"], summary.probe_last_arrival)
                probe["count"] += summary.probe_count
            probe["lost"] += summary.probe_lost
        signal = OVERUSE if overused else self.signal
        if overused:
            self.overuse_events += 1
            if probe is not None:
                probe["overuse"] = True
        self._rate_control(signal, now)
        self._loss_control(now)
        self._conclude_probe(summary.max_send, now)

    def start_probe(self, target_bps: float, start: float, end: float) -> None:
        """Padding will be sent from `start` to `end` so that the total rate reaches `target_bps`."""
        self.probes += 1
        self._probe = {
            "target": target_bps, "start": start, "end": end, "first_send": None, "last_send": 0.0,
            "first_arrival": None, "last_arrival": 0.0, "bytes": 0, "lost": 0, "count": 0, "overuse": False,
            "before": self.estimate_bps,
        }

    def take_probe_result(self) -> ProbeResult | None:
        result, self._probe_result = self._probe_result, None
        return result

    def probe_losses(self) -> int:
        return self._probe["lost"] if self._probe is not None else 0

    def end_probe_early(self, now: float) -> None:
        if self._probe is not None:
            self._probe["end"] = min(self._probe["end"], now)

    @property
    def probing(self) -> bool:
        return self._probe is not None

    @property
    def has_probe_result(self) -> bool:
        """A finished probe's result waits for `take_probe_result()`."""
        return self._probe_result is not None

    def poll(self, now: float) -> None:
        """Timers: give up on a probe whose feedback never came."""
        if self._probe is not None and now > self._probe["end"] + PROBE_TIMEOUT_S:
            self._finish_probe(False, 0.0, 0.0)

    # -- internals -------------------------------------------------------------------------------

    def congested(self, now: float) -> bool:
        """The link is really short of what we send (not one noisy overuse signal): what arrives
        spreads out over more time than it was sent in, or loss is high, or the delay-based
        controller had to cut repeatedly."""
        while self._decrease_times and self._decrease_times[0] < now - CONGESTED_DECREASE_WINDOW_S:
            self._decrease_times.popleft()
        return (
            self.delivery_ratio < CONGESTED_DELIVERY_RATIO
            or self.loss_fraction > CONGESTED_LOSS
            or len(self._decrease_times) >= CONGESTED_DECREASES
        )

    def _rate_control(self, signal: str, now: float) -> None:
        """AIMD (gcc-02 §5.5): decrease on overuse, hold on underuse, else increase."""
        if signal == OVERUSE:
            if self.last_decrease is None or now - self.last_decrease >= DECREASE_INTERVAL_S:
                base = self.acked_bps if self.acked_bps > 0 else self.delay_bps
                target = BETA * base
                if target < self.delay_bps:
                    self.delay_bps = target
                    self.decreases += 1
                    self._decrease_times.append(now)
                self.link_capacity_bps = base
                self.last_decrease = now
            self.state = "hold"
            self.last_change = now
            return
        if signal == UNDERUSE:
            self.state = "hold"
            self.last_change = now
            return
        if self.state == "hold":
            self.state = "increase"
            self.last_change = now
            return
        dt = min(max(now - self.last_change, 0.0), 1.0)
        self.last_change = now
        near = self.link_capacity_bps is not None and self.delay_bps < self.link_capacity_bps * 1.5
        if near:
            grown = self.delay_bps + ADDITIVE_INCREASE_BPS_PER_S * dt
        else:
            grown = self.delay_bps * INCREASE_PER_S**dt
        if self.acked_bps > 0:
            grown = min(grown, max(ACKED_CAP_FACTOR * self.acked_bps + ACKED_CAP_EXTRA_BPS, self.delay_bps))
        self.delay_bps = max(self.delay_bps, grown)

    def _loss_control(self, now: float) -> None:
        """gcc-02 §6: above 10 % loss cut by half the loss fraction; below 2 % let the bound grow."""
        loss = self.loss_fraction
        if loss > LOSS_HIGH:
            if self.last_loss_decrease is None or now - self.last_loss_decrease >= LOSS_DECREASE_INTERVAL_S:
                current = min(self.delay_bps, self.loss_bps)
                # never below what still gets through: loss from our own overshoot is not a rate
                self.loss_bps = max(current * (1 - 0.5 * loss), min(current, BETA * self.acked_bps))
                self.last_loss_decrease = now
        elif loss < LOSS_LOW and self.loss_bps != float("inf"):
            dt = min(max(now - self._last_loss_update, 0.0), 1.0)
            self.loss_bps = max(self.loss_bps * INCREASE_PER_S**dt, 1.05 * self.acked_bps)
            if self.loss_bps > self.delay_bps * 1.5:
                self.loss_bps = float("inf")
        self._last_loss_update = now

    def _conclude_probe(self, max_send: float, now: float) -> None:
        """Once feedback covers packets sent after the probe's end."""
        probe = self._probe
        if probe is None or not max_send > probe["end"]:
            return
        if probe["first_send"] is None or probe["count"] < 5:
            self._finish_probe(False, 0.0, 0.0)
            return
        send_span = max(probe["last_send"] - probe["first_send"], 1e-3)
        arrival_span = max(probe["last_arrival"] - probe["first_arrival"], 1e-3)
        sent_bps = probe["bytes"] * 8 / send_span
        delivered_bps = probe["bytes"] * 8 / arrival_span
        loss = probe["lost"] / (probe["count"] + probe["lost"])
        rate = min(sent_bps, delivered_bps)
        success = (
            not probe["overuse"] and loss <= PROBE_MAX_LOSS
            and delivered_bps >= PROBE_SUCCESS_RATIO * sent_bps
            and rate >= PROBE_SUCCESS_RATIO * probe["target"]
        )
        if success:
            self.delay_bps = max(self.delay_bps, rate)
            if self.loss_bps != float("inf"):
                self.loss_bps = max(self.loss_bps, rate)
            self.link_capacity_bps = None
        self._finish_probe(success, sent_bps, delivered_bps)

    def _finish_probe(self, success: bool, sent: float, delivered: float) -> None:
        target = self._probe["target"] if self._probe else 0.0
        before = self._probe["before"] if self._probe else 0.0
        self._probe = None
        if not success:
            # The probe's own overshoot is no news about the link the media uses: back to where we
            # were (bounded by what the probe saw arrive), and forget the contaminated samples.
            floor = min(before, delivered) if delivered > 0 else before
            self.delay_bps = max(self.delay_bps, floor)
            if self.loss_bps != float("inf"):
                self.loss_bps = max(self.loss_bps, floor)
        self.windows.clear_probe()
        self._decrease_times.clear()
        if success:
            self.probes_succeeded += 1
        self._probe_result = ProbeResult(success, sent, delivered, target)

    def stats(self) -> dict[str, object]:
        return {
            "estimate_bps": int(self.estimate_bps),
            "delay_bps": int(min(self.delay_bps, MAX_BPS)),
            "loss_bps": None if self.loss_bps == float("inf") else int(self.loss_bps),
            "acked_bps": int(self.acked_bps),
            "loss_fraction": round(self.loss_fraction, 4),
            "delivery_ratio": round(self.delivery_ratio, 3),
            "signal": self.signal,
            "threshold_ms": round(self.windows.threshold_ms, 2),
            "overuse_events": self.overuse_events,
            "probes": self.probes,
            "probes_succeeded": self.probes_succeeded,
        }
