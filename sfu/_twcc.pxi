# Included by _fastpath.pyx (`include "_twcc.pxi"`, after _layers.pxi whose send log it reads):
# transport-wide congestion control feedback from a viewer, parsed, matched and summarised in C.
#
# A viewer's feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1) names one entry per
# transport-wide sequence number we sent it, every 50-100 ms: hundreds of packets per second per
# viewer. Python used to build one object per entry; here one `FeedbackAggregator.feed(compound)`
# walks the RTCP compound, parses every transport-cc packet in it (run-length and status-vector
# chunks, 1- and 2-bit symbols, 8-bit and 16-bit signed deltas of 250 µs), unwraps the 16-bit
# numbers against the endpoint's send log (`SendLog`, _layers.pxi), pairs each entry with its send
# time and size, and hands Python ONE `FeedbackSummary` for the whole compound: counts, bytes, the
# probe window's sums, and one record per send burst (the groups of GCC's inter-arrival filter,
# draft-ietf-rmcat-gcc-02 §5.2: packets sent within 5 ms of the group's first). What the estimator
# does with it is Python's (`SendSideBwe.on_feedback_summary`, sfu/core/bwe.py); the pure-Python
# twin of this file (the contract, used by tests) is `SummaryBuilder` in sfu/core/twcc.py.
#
# Arithmetic mirrors the Python reference exactly (times as `us / 1e6` doubles, the burst test as
# `send - group_send <= 0.005`), so both give identical summaries for the same input.

DEF TWCC_FMT = 15                  # RTPFB FMT of transport-cc feedback (§3.1)
DEF TWCC_PT_RTPFB = 205            # RFC 4585 §6.1 transport layer feedback
DEF TWCC_DELTA_US = 250            # §3.1.5: deltas are multiples of 250 µs
DEF TWCC_REFERENCE_US = 64000      # §3.1: reference time in multiples of 64 ms
DEF TWCC_BURST_S = 0.005           # = bwe.BURST_S (libwebrtc kBurstDeltaThreshold)
DEF SENDLOG_REPORTED = 0x80        # send-log flag: already reported received (feedback repeats itself)
DEF TWCC_MAX_PARTS = 64            # RTCP packets in one compound we keep apart (more: left to Python)

cdef double TWCC_INF = float("inf")


cdef class FeedbackSummary:
    """What one viewer RTCP compound's transport-cc feedback says, for `SendSideBwe`.

    Times are seconds: send times on the server's clock, arrival times on the viewer's. Entries are
    taken in transport-wide sequence order (= send order); entries already reported received
    before are skipped (`duplicates`), entries the send log no longer holds counted (`unknown`).
    `bursts`: one `(min_send, max_send, min_arrival, max_arrival, count, bytes)` per run of received
    packets in one trendline group; the first one continues the group the previous feedback left
    open when `continues_group`. Probe sums are over received packets sent in the probe window given
    to `feed` (`probe_first_*` of the first of them, whose size is `probe_first_size` and is not in
    `probe_bytes`; `probe_last_*` the maxima; -1.0 when none)."""

    cdef readonly int feedbacks, malformed, matched, lost, acked, unknown, duplicates
    cdef readonly long long acked_bytes
    cdef readonly double max_send
    cdef readonly bint continues_group
    cdef readonly list bursts
    cdef readonly int probe_count, probe_lost
    cdef readonly long long probe_bytes, probe_first_size
    cdef readonly double probe_first_send, probe_first_arrival, probe_last_send, probe_last_arrival

    def __cinit__(self):
        self.bursts = []
        self.max_send = -1.0
        self.probe_first_send = -1.0
        self.probe_first_arrival = -1.0
        self.probe_last_send = -1.0
        self.probe_last_arrival = -1.0

    def __repr__(self):
        return (f"FeedbackSummary(feedbacks={self.feedbacks}, matched={self.matched}, lost={self.lost}, "
                f"acked={self.acked}, bursts={len(self.bursts)})")


cdef struct _Burst:
    bint open
    double min_send, max_send, min_arrival, max_arrival
    int count
    long long nbytes


cdef inline uint16_t _be16(const uint8_t *p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline void _burst_close(_Burst *b, list out):
    if b.open:
        out.append((b.min_send, b.max_send, b.min_arrival, b.max_arrival, b.count, b.nbytes))
        b.open = False


cdef class FeedbackAggregator:
    """Transport-cc feedback from one viewer, matched against what its endpoint sent.

    Input: `feed(compound, probe_start, probe_end)` with each decrypted RTCP compound from the
    viewer. Output: `(summary or None, rest)`: the `FeedbackSummary` of the transport-cc packets in
    it (None when there were none), and the compound's other packets (`rest`, None when nothing
    else was in it) for the Python RTCP parser. A compound whose headers do not walk (bad version,
    truncated, bad padding) is returned whole as `rest`, untouched, for Python to count as malformed.
    State kept between feedbacks: the open trendline group's first send time, counters."""

    cdef Endpoint ep
    cdef bint has_group
    cdef double group_send
    cdef public uint64_t feedbacks, matched, unknown, duplicates, malformed

    def __init__(self, Endpoint endpoint):
        self.ep = endpoint

    def feed(self, bytes data, double probe_start=TWCC_INF, double probe_end=-TWCC_INF):
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t pos = 0, size, blen
        cdef int starts[TWCC_MAX_PARTS]
        cdef int lens[TWCC_MAX_PARTS]      # body length without padding (TWCC) / whole size (others)
        cdef bint is_twcc[TWCC_MAX_PARTS]
        cdef int nparts = 0, ntwcc = 0, i, pad, rest_len = 0
        cdef FeedbackSummary s
        cdef _Burst burst
        cdef bytes rest
        cdef char *w
        if n < 4:
            return None, data
        while pos < n:
            if n - pos < 4 or (p[pos] >> 6) != 2 or nparts >= TWCC_MAX_PARTS:
                return None, data
            size = 4 + 4 * <Py_ssize_t>_be16(p + pos + 2)
            if pos + size > n:
                return None, data
            starts[nparts] = <int>pos
            is_twcc[nparts] = p[pos + 1] == TWCC_PT_RTPFB and (p[pos] & 0x1F) == TWCC_FMT
            if is_twcc[nparts]:
                blen = size - 4
                if p[pos] & 0x20:  # RFC 3550 §6.4.1 padding: the last octet counts it
                    pad = p[pos + size - 1]
                    if blen == 0 or pad == 0 or pad > blen:
                        return None, data
                    blen -= pad
                lens[nparts] = <int>blen
                ntwcc += 1
            else:
                lens[nparts] = <int>size
                rest_len += <int>size
            nparts += 1
            pos += size
        if ntwcc == 0:
            return None, data
        s = FeedbackSummary()
        burst.open = False
        for i in range(nparts):
            if is_twcc[i]:
                s.feedbacks += 1
                if self._parse_one(p + starts[i] + 4, lens[i], s, &burst, probe_start, probe_end) < 0:
                    s.malformed += 1
        _burst_close(&burst, s.bursts)
        self.feedbacks += s.feedbacks
        self.matched += s.matched
        self.unknown += s.unknown
        self.duplicates += s.duplicates
        self.malformed += s.malformed
        if rest_len == 0:
            return s, None
        rest = PyBytes_FromStringAndSize(NULL, rest_len)
        w = PyBytes_AS_STRING(rest)
        for i in range(nparts):
            if not is_twcc[i]:
                memcpy(w, p + starts[i], lens[i])
                w += lens[i]
        return s, rest

    cdef int _parse_one(self, const uint8_t *b, int blen, FeedbackSummary s, _Burst *burst,
                        double probe_start, double probe_end) except -2:
        """One transport-cc packet body (after the 4-byte RTCP header, padding removed): -1 if
        malformed (nothing of it used), else 0."""
        cdef int count, pos, got, take, k, sym, dpos, deltas_len
        cdef uint16_t chunk, base16
        cdef int64_t arrival_us, newest, base, ext, send_us
        cdef SendRecord *rec
        cdef SendLog *log = self.ep.sendlog
        cdef double send, arrival
        cdef int size
        if blen < 16:
            return -1
        base16 = _be16(b + 8)
        count = _be16(b + 10)
        arrival_us = <int64_t>((<uint32_t>b[12] << 16) | (<uint32_t>b[13] << 8) | b[14]) * TWCC_REFERENCE_US
        # pass 1 (§3.1.3-3.1.4): where the chunks end and how many delta bytes follow; reject before use
        pos = 16
        got = 0
        deltas_len = 0
        while got < count:
            if pos + 2 > blen:
                return -1
            chunk = _be16(b + pos)
            pos += 2
            if chunk & 0x8000 == 0:  # run length: symbol, 13-bit length
                take = chunk & 0x1FFF
                if take > count - got:
                    take = count - got
                sym = (chunk >> 13) & 0x3
                if take > 0 and sym == 3:
                    return -1
                deltas_len += take * sym  # small: 1 byte, large: 2 bytes
                got += take
            elif chunk & 0x4000 == 0:  # status vector, 14 one-bit symbols
                take = 14 if count - got > 14 else count - got
                for k in range(take):
                    deltas_len += (chunk >> (13 - k)) & 0x1
                got += take
            else:  # status vector, 7 two-bit symbols
                take = 7 if count - got > 7 else count - got
                for k in range(take):
                    sym = (chunk >> (12 - 2 * k)) & 0x3
                    if sym == 3:
                        return -1
                    deltas_len += sym
                got += take
        if pos + deltas_len > blen:
            return -1
        dpos = pos
        newest = <int64_t>self.ep.twcc_next - 1
        if newest < 0 or count == 0:
            return 0
        base = newest - ((newest - base16) & 0xFFFF)  # unwrap against what we sent (§3.1: base seq)
        if base < 0:
            return 0
        # pass 2: symbols in order, with their deltas
        pos = 16
        got = 0
        while got < count:
            chunk = _be16(b + pos)
            pos += 2
            if chunk & 0x8000 == 0:
                take = chunk & 0x1FFF
                if take > count - got:
                    take = count - got
            elif chunk & 0x4000 == 0:
                take = 14 if count - got > 14 else count - got
            else:
                take = 7 if count - got > 7 else count - got
            for k in range(take):
                if chunk & 0x8000 == 0:
                    sym = (chunk >> 13) & 0x3
                elif chunk & 0x4000 == 0:
                    sym = (chunk >> (13 - k)) & 0x1
                else:
                    sym = (chunk >> (12 - 2 * k)) & 0x3
                if sym == 1:
                    arrival_us += <int64_t>b[dpos] * TWCC_DELTA_US
                    dpos += 1
                elif sym == 2:
                    arrival_us += <int64_t>(<int16_t>_be16(b + dpos)) * TWCC_DELTA_US
                    dpos += 2
                ext = base + got + k
                rec = sendlog_find(log, <uint64_t>ext)
                if rec == NULL or <uint64_t>ext >= self.ep.twcc_next:
                    s.unknown += 1
                    continue
                if rec.flags & SENDLOG_REPORTED:
                    s.duplicates += 1  # a late "received" after that is ignored too
                    continue
                send_us = rec.sent_us
                size = rec.size
                send = send_us / 1e6
                s.matched += 1
                if send > s.max_send:
                    s.max_send = send
                if sym == 0:
                    s.lost += 1
                    if probe_start <= send <= probe_end:
                        s.probe_lost += 1
                    continue
                rec.flags |= SENDLOG_REPORTED
                arrival = arrival_us / 1e6
                s.acked += 1
                s.acked_bytes += size
                # GCC inter-arrival groups (gcc-02 §5.2), carried across feedbacks
                if self.has_group and send - self.group_send <= TWCC_BURST_S:
                    if not burst.open and not s.bursts:
                        s.continues_group = True
                else:
                    self.has_group = True
                    self.group_send = send
                    _burst_close(burst, s.bursts)
                if not burst.open:
                    burst.open = True
                    burst.min_send = burst.max_send = send
                    burst.min_arrival = burst.max_arrival = arrival
                    burst.count = 0
                    burst.nbytes = 0
                else:
                    if send < burst.min_send:
                        burst.min_send = send
                    if send > burst.max_send:
                        burst.max_send = send
                    if arrival < burst.min_arrival:
                        burst.min_arrival = arrival
                    if arrival > burst.max_arrival:
                        burst.max_arrival = arrival
                burst.count += 1
                burst.nbytes += size
                if probe_start <= send <= probe_end:
                    if s.probe_count == 0:
                        s.probe_first_send = send
                        s.probe_first_arrival = arrival
                        s.probe_first_size = size
                    else:
                        s.probe_bytes += size
                    if send > s.probe_last_send:
                        s.probe_last_send = send
                    if arrival > s.probe_last_arrival:
                        s.probe_last_arrival = arrival
                    s.probe_count += 1
            got += take
        return 0


def record_sent(Endpoint ep, double now, int size, int flags=0):
    """Log a packet as sent to `ep` under the next transport-wide sequence number (returned), as the
    forwarding loop does. For tests and simulations that feed `FeedbackAggregator` without sending."""
    cdef uint64_t seq = ep.twcc_next
    if ep.sendlog == NULL:
        ep.sendlog = sendlog_new()
        if ep.sendlog == NULL:
            raise MemoryError()
    ep.twcc_next += 1
    sendlog_record(ep.sendlog, seq, now, size, flags)
    return seq

