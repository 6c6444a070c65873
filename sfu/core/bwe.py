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
`acked_bps`, `signal`, `take_probe_result()`. Sans-IO: no clock, no socket. Work per feedback is
proportional to its send bursts (~3-10 per 100 ms), not its packets: the windows below keep
running sums and monotonic deques instead of rescanning.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

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


@dataclass(slots=True)
class ProbeResult:
    success: bool
    sent_bps: float
    delivered_bps: float
    target_bps: float


class _Trendline:
    """Delay-gradient trend over send-time groups (libwebrtc TrendlineEstimator)."""

    def __init__(self) -> None:
        self.group_send: float | None = None  # first send time of the open group
        self.group_last_send = 0.0
        self.group_last_arrival = 0.0
        self.prev: tuple[float, float] | None = None  # (last send, last arrival) of the previous group
        self.accumulated_ms = 0.0
        self.smoothed_ms = 0.0
        self.first_arrival: float | None = None
        self.window = _SlopeWindow(TRENDLINE_WINDOW)
        self.deltas = 0
        self.trend = 0.0
        self.threshold_ms = THRESHOLD_INITIAL_MS
        self.last_threshold_update: float | None = None
        self.overuse_time = -1.0
        self.overuse_count = 0
        self.prev_trend = 0.0
        self.signal = NORMAL

    def add_burst(self, last_send: float, last_arrival: float, continues: bool, now: float) -> None:
        """Received packets of one send-burst group (the grouping itself, packets sent within
        `BURST_S` of the group's first, is the summariser's): their latest send and arrival times.
        `continues`: they belong to the group still open (it began in an earlier feedback)."""
        if self.group_send is None:
            self._open(last_send, last_arrival)
            return
        if continues:
            self.group_last_send = max(self.group_last_send, last_send)
            self.group_last_arrival = max(self.group_last_arrival, last_arrival)
            return
        # the open group is complete: compare it with the previous one
        done = (self.group_last_send, self.group_last_arrival)
        if self.prev is not None:
            send_delta = done[0] - self.prev[0]
            arrival_delta = done[1] - self.prev[1]
            if send_delta > 0:
                self._update(send_delta * 1000.0, arrival_delta * 1000.0, done[1], now)
        self.prev = done
        self._open(last_send, last_arrival)

    def _open(self, send: float, arrival: float) -> None:
        self.group_send = send
        self.group_last_send = send
        self.group_last_arrival = arrival

    def _update(self, send_delta_ms: float, arrival_delta_ms: float, arrival: float, now: float) -> None:
        self.deltas = min(self.deltas + 1, MAX_DELTAS)
        self.accumulated_ms += arrival_delta_ms - send_delta_ms
        self.smoothed_ms = TRENDLINE_SMOOTHING * self.smoothed_ms + (1 - TRENDLINE_SMOOTHING) * self.accumulated_ms
        if self.first_arrival is None:
            self.first_arrival = arrival
        window = self.window
        window.append((arrival - self.first_arrival) * 1000.0, self.smoothed_ms)
        if window.n == TRENDLINE_WINDOW:
            self.trend = window.slope() or self.trend
        self._detect(send_delta_ms, now)

    def _detect(self, send_delta_ms: float, now: float) -> None:
        modified = min(self.deltas, MAX_DELTAS) * self.trend * TRENDLINE_GAIN
        if modified > self.threshold_ms:
            if self.overuse_time < 0:
                self.overuse_time = send_delta_ms / 2000.0
            else:
                self.overuse_time += send_delta_ms / 1000.0
            self.overuse_count += 1
            if self.overuse_time > OVERUSE_TIME_S and self.overuse_count > 1 and self.trend >= self.prev_trend:
                self.overuse_time = 0.0
                self.overuse_count = 0
                self.signal = OVERUSE
        elif modified < -self.threshold_ms:
            self.overuse_time = -1.0
            self.overuse_count = 0
            self.signal = UNDERUSE
        else:
            self.overuse_time = -1.0
            self.overuse_count = 0
            self.signal = NORMAL
        self.prev_trend = self.trend
        self._adapt_threshold(modified, now)

    def _adapt_threshold(self, modified: float, now: float) -> None:
        if self.last_threshold_update is None:
            self.last_threshold_update = now
        magnitude = abs(modified)
        if magnitude > self.threshold_ms + 15.0:  # a spike: do not let it drag the threshold
            self.last_threshold_update = now
            return
        k = K_DOWN if magnitude < self.threshold_ms else K_UP
        dt_ms = min((now - self.last_threshold_update) * 1000.0, 100.0)
        self.threshold_ms += k * (magnitude - self.threshold_ms) * dt_ms
        self.threshold_ms = min(max(self.threshold_ms, THRESHOLD_MIN_MS), THRESHOLD_MAX_MS)
        self.last_threshold_update = now


def _slope(points: deque[tuple[float, float]]) -> float | None:
    n = len(points)
    sum_x = sum_y = 0.0
    for x, y in points:
        sum_x += x
        sum_y += y
    mean_x, mean_y = sum_x / n, sum_y / n
    num = den = 0.0
    for x, y in points:
        dx = x - mean_x
        num += dx * (y - mean_y)
        den += dx * dx
    return num / den if den else None


class _SlopeWindow:
    """The last `size` points (x, y) and their least-squares slope in O(1) per point (what
    `_slope` computes by rescanning): running sums of x, y, xy, xx updated as a point enters and
    the oldest leaves. Coordinates are kept relative to an origin (a point of the window) so the
    sums stay small and `n*Sxx - Sx*Sx` does not cancel; the origin moves to the oldest point and
    the sums are rebuilt exactly every `size` points, which also bounds rounding drift."""

    __slots__ = ("size", "points", "n", "x0", "y0", "sx", "sy", "sxy", "sxx", "_since_rebuild")

    def __init__(self, size: int) -> None:
        self.size = size
        self.points: deque[tuple[float, float]] = deque()  # relative to (x0, y0)
        self.n = 0
        self.x0 = self.y0 = 0.0
        self.sx = self.sy = self.sxy = self.sxx = 0.0
        self._since_rebuild = 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        x0, y0 = self.x0, self.y0
        return ((x + x0, y + y0) for x, y in self.points)

    def append(self, x: float, y: float) -> None:
        points = self.points
        if not points:
            self.x0, self.y0 = x, y
        x -= self.x0
        y -= self.y0
        points.append((x, y))
        self.sx += x
        self.sy += y
        self.sxy += x * y
        self.sxx += x * x
        if self.n == self.size:
            ox, oy = points.popleft()
            self.sx -= ox
            self.sy -= oy
            self.sxy -= ox * oy
            self.sxx -= ox * ox
        else:
            self.n += 1
        self._since_rebuild += 1
        if self._since_rebuild >= self.size:
            self._rebuild()

    def _rebuild(self) -> None:
        """Recentre on the oldest point and recompute the sums exactly."""
        self._since_rebuild = 0
        dx, dy = self.points[0]
        self.x0 += dx
        self.y0 += dy
        sx = sy = sxy = sxx = 0.0
        moved = deque()
        for x, y in self.points:
            x -= dx
            y -= dy
            moved.append((x, y))
            sx += x
            sy += y
            sxy += x * y
            sxx += x * x
        self.points = moved
        self.sx, self.sy, self.sxy, self.sxx = sx, sy, sxy, sxx

    def slope(self) -> float | None:
        """As `_slope(points)`: None when all x are equal (or the window is empty)."""
        n = self.n
        if not n:
            return None
        sx = self.sx
        sxx = self.sxx
        den = n * sxx - sx * sx
        if den <= 1e-12 * n * sxx:  # all x equal, up to rounding of the running sums
            return None
        num = n * self.sxy - sx * self.sy
        return num / den


class _Extreme:
    """Maximum (`sign` 1) or minimum (-1) of a sliding window in amortised O(1): a monotonic deque
    of (entry number, value); entries leave by number, oldest first."""

    __slots__ = ("sign", "q")

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.q: deque[tuple[int, float]] = deque()

    def push(self, i: int, value: float) -> None:
        q, key = self.q, value * self.sign
        while q and q[-1][1] * self.sign <= key:
            q.pop()
        q.append((i, value))

    def drop_through(self, i: int) -> None:
        q = self.q
        while q and q[0][0] <= i:
            q.popleft()

    @property
    def value(self) -> float:
        return self.q[0][1]


class SendSideBwe:
    """The bandwidth estimate towards one viewer (all its media on one transport)."""

    def __init__(self, initial_bps: float, now: float) -> None:
        self.delay_bps = float(initial_bps)
        self.loss_bps = float("inf")
        self.trendline = _Trendline()
        self.state = "increase"
        self.last_change = now
        self.last_decrease: float | None = None
        self.last_loss_decrease: float | None = None
        self._last_loss_update = now
        self.link_capacity_bps: float | None = None  # acknowledged rate at the last decrease
        # received bytes by burst: (latest arrival, earliest arrival, bytes), their sum, newest arrival
        self._acked: deque[tuple[float, float, int]] = deque()
        self._acked_bytes = 0
        self._acked_newest = float("-inf")
        self._loss: deque[tuple[float, int, int]] = deque()  # (now, lost, total) per feedback
        self._loss_lost = self._loss_total = 0
        # received packets by burst: (entry number, latest send, count); extremes over the window
        self._delivery: deque[tuple[int, float, int]] = deque()
        self._delivery_count = 0
        self._delivery_seq = 0
        self._send_min, self._send_max = _Extreme(-1.0), _Extreme(1.0)
        self._arrival_min, self._arrival_max = _Extreme(-1.0), _Extreme(1.0)
        self._decrease_times: deque[float] = deque()
        self._reference: Any = None  # twcc.SummaryBuilder behind on_feedback(), made when first used
        self.delivery_ratio = 1.0
        self.acked_bps = 0.0
        self.loss_fraction = 0.0
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
        return self.trendline.signal

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
        overused = False
        trendline = self.trendline
        continues = summary.continues_group
        for min_send, max_send, min_arrival, max_arrival, count, size in summary.bursts:
            trendline.add_burst(max_send, max_arrival, continues, now)
            continues = False
            if trendline.signal == OVERUSE:
                overused = True
            self._acked.append((max_arrival, min_arrival, size))
            self._acked_bytes += size
            if max_arrival > self._acked_newest:
                self._acked_newest = max_arrival
            i = self._delivery_seq = self._delivery_seq + 1
            self._delivery.append((i, max_send, count))
            self._delivery_count += count
            self._send_min.push(i, min_send)
            self._send_max.push(i, max_send)
            self._arrival_min.push(i, min_arrival)
            self._arrival_max.push(i, max_arrival)
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
        self._update_acked()
        self._update_delivery()
        loss = self._loss
        if summary.matched:
            loss.append((now, summary.lost, summary.matched))
            self._loss_lost += summary.lost
            self._loss_total += summary.matched
        while loss and loss[0][0] < now - LOSS_WINDOW_S:
            _, lost, total = loss.popleft()
            self._loss_lost -= lost
            self._loss_total -= total
        self.loss_fraction = self._loss_lost / self._loss_total if self._loss_total else 0.0
        signal = OVERUSE if overused else trendline.signal
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

    def poll(self, now: float) -> None:
        """Timers: give up on a probe whose feedback never came."""
        if self._probe is not None and now > self._probe["end"] + PROBE_TIMEOUT_S:
            self._finish_probe(False, 0.0, 0.0)

    # -- internals -------------------------------------------------------------------------------

    def _update_acked(self) -> None:
        """Received bytes over the last `ACKED_WINDOW_S` of arrivals (a burst leaves whole)."""
        acked = self._acked
        if not acked:
            return
        newest = self._acked_newest
        while acked and acked[0][0] < newest - ACKED_WINDOW_S:
            self._acked_bytes -= acked.popleft()[2]
        span = max(ACKED_WINDOW_S / 2, newest - acked[0][1]) if acked else ACKED_WINDOW_S
        self.acked_bps = self._acked_bytes * 8 / span

    def _update_delivery(self) -> None:
        """Send spread against arrival spread of what was received over `DELIVERY_WINDOW_S` of
        send time (a burst leaves whole)."""
        d = self._delivery
        if not d:
            return
        newest = d[-1][1]
        dropped = 0
        while d and d[0][1] < newest - DELIVERY_WINDOW_S:
            dropped, _, count = d.popleft()
            self._delivery_count -= count
        if dropped:
            for extreme in (self._send_min, self._send_max, self._arrival_min, self._arrival_max):
                extreme.drop_through(dropped)
        if self._delivery_count < 10:
            return
        send_span = self._send_max.value - self._send_min.value
        arrival_span = self._arrival_max.value - self._arrival_min.value
        if send_span > 0.1 and arrival_span > 0:
            self.delivery_ratio = min(send_span / arrival_span, 2.0)

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
        self._loss.clear()
        self._loss_lost = self._loss_total = 0
        self._delivery.clear()
        self._delivery_count = 0
        for extreme in (self._send_min, self._send_max, self._arrival_min, self._arrival_max):
            extreme.q.clear()
        self._decrease_times.clear()
        self.loss_fraction = 0.0
        self.delivery_ratio = 1.0
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
            "threshold_ms": round(self.trendline.threshold_ms, 2),
            "overuse_events": self.overuse_events,
            "probes": self.probes,
            "probes_succeeded": self.probes_succeeded,
        }
