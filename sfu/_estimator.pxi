# The estimator's windows in C: included by _fastpath.pyx after _twcc.pxi (whose summaries feed it).

# ---- the estimator's windows over one viewer's feedback (for `SendSideBwe`, sfu/core/bwe.py) ----
#
# Per send burst of a summary: the GCC trendline (libwebrtc TrendlineEstimator: inter-group delay
# variation, least-squares slope over the last TRENDLINE_WINDOW groups, overuse detector with an
# adaptive threshold, draft-ietf-rmcat-gcc-02 §5.3-5.4); the acknowledged rate over ACKED_WINDOW_S
# of arrivals; the delivery ratio (send spread over arrival spread) over DELIVERY_WINDOW_S of send
# time; per feedback, the loss fraction over LOSS_WINDOW_S. Arithmetic mirrors the Python reference
# (`sfu/core/bwe_reference.py`) operation for operation, so both give identical doubles.

from libc.math cimport fabs

DEF BWE_TRENDLINE_WINDOW = 20      # = bwe.TRENDLINE_WINDOW (groups in the linear fit)
DEF BWE_SMOOTHING = 0.9            # = bwe.TRENDLINE_SMOOTHING
DEF BWE_GAIN = 4.0                 # = bwe.TRENDLINE_GAIN
DEF BWE_MAX_DELTAS = 60            # = bwe.MAX_DELTAS
DEF BWE_THRESHOLD_INITIAL_MS = 12.5
DEF BWE_THRESHOLD_MIN_MS = 6.0
DEF BWE_THRESHOLD_MAX_MS = 600.0
DEF BWE_K_UP = 0.0087
DEF BWE_K_DOWN = 0.039
DEF BWE_OVERUSE_TIME_S = 0.01
DEF BWE_ACKED_WINDOW_S = 0.5
DEF BWE_DELIVERY_WINDOW_S = 1.0
DEF BWE_LOSS_WINDOW_S = 1.0
DEF BWE_BURSTS_INITIAL = 64        # burst ring entries at first (power of two; grows by doubling)
DEF BWE_BURSTS_MAX = 2048          # at most (power of two): ~200 groups/s fill 1 s; beyond, the oldest leave
DEF BWE_LOSS_SLOTS = 64            # feedbacks in the loss window (power of two); beyond, the oldest leave
DEF BWE_NORMAL = 0
DEF BWE_OVERUSE = 1
DEF BWE_UNDERUSE = 2

cdef struct _BurstEntry:
    double min_send, max_send, min_arrival, max_arrival
    int32_t count, nbytes


cdef class EstimatorWindows:
    """The per-burst part of one viewer's send-side estimate, in C (see the block comment above).

    Input: `add(bursts, continues_group, matched, lost, now)` once per feedback summary (the
    summary's fields, `now` on the server's clock): returns True when the trendline signalled
    overuse at any of the bursts. `clear_probe()` forgets the loss and delivery windows (a probe's
    samples). Outputs: `signal` (0 normal, 1 overuse, 2 underuse), `acked_bps`, `delivery_ratio`,
    `loss_fraction`, `trend`, `threshold_ms`. Memory: one ring of bursts shared by the acked and the
    delivery windows (two heads), 40 bytes per burst, grown on demand, plus fixed arrays."""

    # trendline
    cdef bint has_group, has_prev, has_first_arrival, has_threshold_update
    cdef double group_last_send, group_last_arrival, prev_send, prev_arrival
    cdef double accumulated_ms, smoothed_ms, first_arrival
    cdef double px[BWE_TRENDLINE_WINDOW]
    cdef double py[BWE_TRENDLINE_WINDOW]
    cdef int pn, phead, since_rebuild
    cdef double x0, y0, sx, sy, sxy, sxx
    cdef int deltas, overuse_count
    cdef readonly double trend, threshold_ms
    cdef double last_threshold_update, overuse_time, prev_trend
    cdef readonly int signal
    # bursts: [acked_head, tail) the acked window, [delivery_head, tail) the delivery window
    cdef _BurstEntry *ring
    cdef uint32_t cap
    cdef uint64_t acked_head, delivery_head, tail
    cdef long long acked_bytes
    cdef long long delivery_count
    cdef double acked_newest
    cdef readonly double acked_bps, delivery_ratio, loss_fraction
    # loss: per feedback (time, lost, total)
    cdef double loss_t[BWE_LOSS_SLOTS]
    cdef int32_t loss_lost[BWE_LOSS_SLOTS]
    cdef int32_t loss_total[BWE_LOSS_SLOTS]
    cdef uint32_t loss_head, loss_tail
    cdef long long loss_lost_sum, loss_total_sum

    def __cinit__(self):
        self.threshold_ms = BWE_THRESHOLD_INITIAL_MS
        self.overuse_time = -1.0
        self.acked_newest = -TWCC_INF
        self.delivery_ratio = 1.0
        self.signal = BWE_NORMAL

    def __dealloc__(self):
        free(self.ring)

    @property
    def bursts_held(self):
        """Bursts in the ring (the longer of the two windows) and the ring's capacity."""
        return int(self.tail - min(self.acked_head, self.delivery_head)), int(self.cap)

    def add(self, list bursts, bint continues, int matched, int lost, double now):
        cdef Py_ssize_t i, n = PyList_GET_SIZE(bursts)
        cdef tuple b
        cdef bint overused = False
        cdef _BurstEntry e
        for i in range(n):
            b = <tuple?>PyList_GET_ITEM(bursts, i)
            e.min_send = b[0]
            e.max_send = b[1]
            e.min_arrival = b[2]
            e.max_arrival = b[3]
            e.count = b[4]
            e.nbytes = b[5]
            self._add_burst(e.max_send, e.max_arrival, continues, now)
            continues = False
            if self.signal == BWE_OVERUSE:
                overused = True
            self._push(&e)
        self._update_acked()
        self._update_delivery()
        self._update_loss(matched, lost, now)
        return overused

    def clear_probe(self):
        self.delivery_head = self.tail
        self.delivery_count = 0
        self.loss_head = self.loss_tail
        self.loss_lost_sum = self.loss_total_sum = 0
        self.loss_fraction = 0.0
        self.delivery_ratio = 1.0

    # -- trendline (reference: bwe_reference._Trendline) --

    cdef void _add_burst(self, double last_send, double last_arrival, bint continues, double now):
        cdef double done_send, done_arrival, send_delta
        if not self.has_group:
            self.has_group = True
            self.group_last_send = last_send
            self.group_last_arrival = last_arrival
            return
        if continues:
            if last_send > self.group_last_send:
                self.group_last_send = last_send
            if last_arrival > self.group_last_arrival:
                self.group_last_arrival = last_arrival
            return
        done_send = self.group_last_send
        done_arrival = self.group_last_arrival
        if self.has_prev:
            send_delta = done_send - self.prev_send
            if send_delta > 0:
                self._update(send_delta * 1000.0, (done_arrival - self.prev_arrival) * 1000.0, done_arrival, now)
        self.has_prev = True
        self.prev_send = done_send
        self.prev_arrival = done_arrival
        self.group_last_send = last_send
        self.group_last_arrival = last_arrival

    cdef void _update(self, double send_delta_ms, double arrival_delta_ms, double arrival, double now):
        cdef double slope
        self.deltas = self.deltas + 1 if self.deltas + 1 < BWE_MAX_DELTAS else BWE_MAX_DELTAS
        self.accumulated_ms += arrival_delta_ms - send_delta_ms
        self.smoothed_ms = BWE_SMOOTHING * self.smoothed_ms + (1 - BWE_SMOOTHING) * self.accumulated_ms
        if not self.has_first_arrival:
            self.has_first_arrival = True
            self.first_arrival = arrival
        self._append((arrival - self.first_arrival) * 1000.0, self.smoothed_ms)
        if self.pn == BWE_TRENDLINE_WINDOW:
            if self._slope(&slope) and slope != 0.0:  # Python: `slope() or trend`
                self.trend = slope
        self._detect(send_delta_ms, now)

    cdef void _append(self, double x, double y):
        """bwe_reference._SlopeWindow.append: running sums relative to an origin in the window."""
        cdef int k, slot
        cdef double ox, oy, dx, dy, sx, sy, sxy, sxx
        if self.pn == 0:
            self.x0 = x
            self.y0 = y
        x -= self.x0
        y -= self.y0
        slot = (self.phead + self.pn) % BWE_TRENDLINE_WINDOW
        if self.pn == BWE_TRENDLINE_WINDOW:  # full: the new point takes the oldest's slot
            slot = self.phead
            ox = self.px[slot]
            oy = self.py[slot]
        self.px[slot] = x
        self.py[slot] = y
        self.sx += x
        self.sy += y
        self.sxy += x * y
        self.sxx += x * x
        if self.pn == BWE_TRENDLINE_WINDOW:
            self.phead = (self.phead + 1) % BWE_TRENDLINE_WINDOW
            self.sx -= ox
            self.sy -= oy
            self.sxy -= ox * oy
            self.sxx -= ox * ox
        else:
            self.pn += 1
        self.since_rebuild += 1
        if self.since_rebuild >= BWE_TRENDLINE_WINDOW:
            self.since_rebuild = 0
            dx = self.px[self.phead]
            dy = self.py[self.phead]
            self.x0 += dx
            self.y0 += dy
            sx = sy = sxy = sxx = 0.0
            for k in range(self.pn):
                slot = (self.phead + k) % BWE_TRENDLINE_WINDOW
                x = self.px[slot] - dx
                y = self.py[slot] - dy
                self.px[slot] = x
                self.py[slot] = y
                sx += x
                sy += y
                sxy += x * y
                sxx += x * x
            self.sx = sx
            self.sy = sy
            self.sxy = sxy
            self.sxx = sxx

    cdef bint _slope(self, double *out):
        cdef double n = self.pn, den
        if self.pn == 0:
            return False
        den = n * self.sxx - self.sx * self.sx
        if den <= 1e-12 * n * self.sxx:
            return False
        out[0] = (n * self.sxy - self.sx * self.sy) / den
        return True

    cdef void _detect(self, double send_delta_ms, double now):
        cdef double modified = (self.deltas if self.deltas < BWE_MAX_DELTAS else BWE_MAX_DELTAS) * self.trend * BWE_GAIN
        if modified > self.threshold_ms:
            if self.overuse_time < 0:
                self.overuse_time = send_delta_ms / 2000.0
            else:
                self.overuse_time += send_delta_ms / 1000.0
            self.overuse_count += 1
            if self.overuse_time > BWE_OVERUSE_TIME_S and self.overuse_count > 1 and self.trend >= self.prev_trend:
                self.overuse_time = 0.0
                self.overuse_count = 0
                self.signal = BWE_OVERUSE
        elif modified < -self.threshold_ms:
            self.overuse_time = -1.0
            self.overuse_count = 0
            self.signal = BWE_UNDERUSE
        else:
            self.overuse_time = -1.0
            self.overuse_count = 0
            self.signal = BWE_NORMAL
        self.prev_trend = self.trend
        self._adapt_threshold(modified, now)

    cdef void _adapt_threshold(self, double modified, double now):
        cdef double magnitude, k, dt_ms
        if not self.has_threshold_update:
            self.has_threshold_update = True
            self.last_threshold_update = now
        magnitude = fabs(modified)
        if magnitude > self.threshold_ms + 15.0:  # a spike: do not let it drag the threshold
            self.last_threshold_update = now
            return
        k = BWE_K_DOWN if magnitude < self.threshold_ms else BWE_K_UP
        dt_ms = (now - self.last_threshold_update) * 1000.0
        if dt_ms > 100.0:
            dt_ms = 100.0
        self.threshold_ms += k * (magnitude - self.threshold_ms) * dt_ms
        if self.threshold_ms < BWE_THRESHOLD_MIN_MS:
            self.threshold_ms = BWE_THRESHOLD_MIN_MS
        if self.threshold_ms > BWE_THRESHOLD_MAX_MS:
            self.threshold_ms = BWE_THRESHOLD_MAX_MS
        self.last_threshold_update = now

    # -- windows (reference: bwe_reference.ReferenceWindows) --

    cdef void _push(self, _BurstEntry *e) except *:
        cdef uint64_t oldest = self.acked_head if self.acked_head < self.delivery_head else self.delivery_head
        cdef uint64_t i
        cdef uint32_t cap
        cdef _BurstEntry *grown
        cdef _BurstEntry *old
        if self.tail - oldest >= self.cap:
            if self.cap < BWE_BURSTS_MAX:
                cap = BWE_BURSTS_INITIAL if self.cap == 0 else 2 * self.cap
                grown = <_BurstEntry *>malloc(cap * sizeof(_BurstEntry))
                if grown == NULL:
                    raise MemoryError()
                for i in range(oldest, self.tail):
                    grown[i & (cap - 1)] = self.ring[i & (self.cap - 1)]
                free(self.ring)
                self.ring = grown
                self.cap = cap
            else:  # full at the maximum: the oldest burst leaves both windows
                old = &self.ring[oldest & (self.cap - 1)]
                if self.acked_head == oldest:
                    self.acked_bytes -= old.nbytes
                    self.acked_head += 1
                if self.delivery_head == oldest:
                    self.delivery_count -= old.count
                    self.delivery_head += 1
        self.ring[self.tail & (self.cap - 1)] = e[0]
        self.tail += 1
        self.acked_bytes += e.nbytes
        self.delivery_count += e.count
        if e.max_arrival > self.acked_newest:
            self.acked_newest = e.max_arrival

    cdef void _update_acked(self):
        """Received bytes over the last ACKED_WINDOW_S of arrivals (a burst leaves whole)."""
        cdef uint32_t mask = self.cap - 1
        cdef double newest = self.acked_newest, span
        if self.acked_head == self.tail:
            return
        while self.acked_head < self.tail and self.ring[self.acked_head & mask].max_arrival < newest - BWE_ACKED_WINDOW_S:
            self.acked_bytes -= self.ring[self.acked_head & mask].nbytes
            self.acked_head += 1
        if self.acked_head < self.tail:
            span = newest - self.ring[self.acked_head & mask].min_arrival
            if span < BWE_ACKED_WINDOW_S / 2:
                span = BWE_ACKED_WINDOW_S / 2
        else:
            span = BWE_ACKED_WINDOW_S
        self.acked_bps = self.acked_bytes * 8 / span

    cdef void _update_delivery(self):
        """Send spread against arrival spread of what was received over DELIVERY_WINDOW_S of send
        time (a burst leaves whole)."""
        cdef uint32_t mask = self.cap - 1
        cdef uint64_t i
        cdef double newest, send_min, send_max, arrival_min, arrival_max, send_span, arrival_span
        cdef _BurstEntry *e
        if self.delivery_head == self.tail:
            return
        newest = self.ring[(self.tail - 1) & mask].max_send
        while self.delivery_head < self.tail and self.ring[self.delivery_head & mask].max_send < newest - BWE_DELIVERY_WINDOW_S:
            self.delivery_count -= self.ring[self.delivery_head & mask].count
            self.delivery_head += 1
        if self.delivery_count < 10:
            return
        e = &self.ring[self.delivery_head & mask]
        send_min, send_max, arrival_min, arrival_max = e.min_send, e.max_send, e.min_arrival, e.max_arrival
        for i in range(self.delivery_head + 1, self.tail):
            e = &self.ring[i & mask]
            if e.min_send < send_min:
                send_min = e.min_send
            if e.max_send > send_max:
                send_max = e.max_send
            if e.min_arrival < arrival_min:
                arrival_min = e.min_arrival
            if e.max_arrival > arrival_max:
                arrival_max = e.max_arrival
        send_span = send_max - send_min
        arrival_span = arrival_max - arrival_min
        if send_span > 0.1 and arrival_span > 0:
            self.delivery_ratio = send_span / arrival_span
            if self.delivery_ratio > 2.0:
                self.delivery_ratio = 2.0

    cdef void _update_loss(self, int matched, int lost, double now):
        cdef uint32_t slot
        if matched:
            if self.loss_tail - self.loss_head == BWE_LOSS_SLOTS:  # full: the oldest leaves
                slot = self.loss_head & (BWE_LOSS_SLOTS - 1)
                self.loss_lost_sum -= self.loss_lost[slot]
                self.loss_total_sum -= self.loss_total[slot]
                self.loss_head += 1
            slot = self.loss_tail & (BWE_LOSS_SLOTS - 1)
            self.loss_t[slot] = now
            self.loss_lost[slot] = lost
            self.loss_total[slot] = matched
            self.loss_tail += 1
            self.loss_lost_sum += lost
            self.loss_total_sum += matched
        while self.loss_head != self.loss_tail and self.loss_t[self.loss_head & (BWE_LOSS_SLOTS - 1)] < now - BWE_LOSS_WINDOW_S:
            slot = self.loss_head & (BWE_LOSS_SLOTS - 1)
            self.loss_lost_sum -= self.loss_lost[slot]
            self.loss_total_sum -= self.loss_total[slot]
            self.loss_head += 1
        self.loss_fraction = <double>self.loss_lost_sum / self.loss_total_sum if self.loss_total_sum else 0.0
