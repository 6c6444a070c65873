"""The pure-Python reference of the estimator's windows (`_fastpath.EstimatorWindows`, sfu/_estimator.pxi).

What `SendSideBwe` (sfu/core/bwe.py) does per send burst of a feedback summary: the GCC trendline
(inter-group delay variation, least-squares slope, overuse detector with an adaptive threshold,
draft-ietf-rmcat-gcc-02 §5.3-5.4), the acknowledged rate over `ACKED_WINDOW_S` of arrivals, the
delivery ratio over `DELIVERY_WINDOW_S` of send time, the loss fraction over `LOSS_WINDOW_S`. The
server runs the C twin; this one is the contract it is tested against (identical doubles for the
same input, `tests/unit/test_bwe_windows.py`) and can stand in for it (`SendSideBwe(windows=...)`).

Input: `add(bursts, continues_group, matched, lost, now)` per summary (True: overuse was signalled
at one of the bursts), `clear_probe()`. Outputs: `signal`, `acked_bps`, `delivery_ratio`,
`loss_fraction`, `trend`, `threshold_ms`. Sans-IO.
"""

from __future__ import annotations

from collections import deque

from .bwe import (
    ACKED_WINDOW_S,
    DELIVERY_WINDOW_S,
    K_DOWN,
    K_UP,
    LOSS_WINDOW_S,
    MAX_DELTAS,
    NORMAL,
    OVERUSE,
    OVERUSE_TIME_S,
    THRESHOLD_INITIAL_MS,
    THRESHOLD_MAX_MS,
    THRESHOLD_MIN_MS,
    TRENDLINE_GAIN,
    TRENDLINE_SMOOTHING,
    TRENDLINE_WINDOW,
    UNDERUSE,
)

SIGNALS = {NORMAL: 0, OVERUSE: 1, UNDERUSE: 2}  # as `_fastpath.EstimatorWindows.signal`


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


class ReferenceWindows:
    """`_fastpath.EstimatorWindows` in Python: running sums and monotonic deques, O(1) amortised per
    burst (the C twin rescans its delivery window instead of keeping the extremes)."""

    def __init__(self) -> None:
        self.trendline = _Trendline()
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
        self.acked_bps = 0.0
        self.delivery_ratio = 1.0
        self.loss_fraction = 0.0

    @property
    def signal(self) -> int:
        return SIGNALS[self.trendline.signal]

    @property
    def trend(self) -> float:
        return self.trendline.trend

    @property
    def threshold_ms(self) -> float:
        return self.trendline.threshold_ms

    def add(self, bursts: list[tuple[float, float, float, float, int, int]], continues: bool, matched: int,
            lost: int, now: float) -> bool:
        overused = False
        trendline = self.trendline
        for min_send, max_send, min_arrival, max_arrival, count, size in bursts:
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
        self._update_acked()
        self._update_delivery()
        loss = self._loss
        if matched:
            loss.append((now, lost, matched))
            self._loss_lost += lost
            self._loss_total += matched
        while loss and loss[0][0] < now - LOSS_WINDOW_S:
            _, lost_, total = loss.popleft()
            self._loss_lost -= lost_
            self._loss_total -= total
        self.loss_fraction = self._loss_lost / self._loss_total if self._loss_total else 0.0
        return overused

    def clear_probe(self) -> None:
        """Forget the loss and delivery samples (a probe's own overshoot)."""
        self._loss.clear()
        self._loss_lost = self._loss_total = 0
        self._delivery.clear()
        self._delivery_count = 0
        for extreme in (self._send_min, self._send_max, self._arrival_min, self._arrival_max):
            extreme.q.clear()
        self.loss_fraction = 0.0
        self.delivery_ratio = 1.0

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
