# Loss repair and instant first frame: the per-packet parts (included from _fastpath.pyx).
#
# Three bounded C structures, each a power-of-two ring checked at construction (STYLE.md 6):
#
# - RecvLog (one per InStream, embedded): a received bitmap over the last RECV_WINDOW extended
#   sequence numbers. It drops duplicates (a same-SSRC retransmission that raced the original, an
#   RTX copy of a packet we already have: a packet reaches viewers exactly once) and records each
#   gap (first missing, count) in a small ring that Python's NACK generator drains
#   (`InStream.take_gaps`). RFC 4585 §6.2.1 NACKs are built in Python from those.
# - SrcStore + rewrite epochs (_resend.pxi): the source packets once per layer, and per OutTrack
#   how they were rewritten; `Router.resend` answers one NACK packet in one C call: rebuild, the
#   policy checks (before the last keyframe, sent again within an RTT, token bucket), RFC 4588 RTX
#   wrapping when negotiated, protect, queue.
# - KfCache (one per video InStream when the keyframe cache is on): the plaintext packets since
#   the last keyframe start, bounded in packets, bytes and age. `Router.replay_cache` replays it
#   through one subscription's rewrite so a new viewer starts at once, even from a publisher that
#   ignores PLI. Sized by the stream's own keyframe interval: the arena grows (by half) as a
#   group needs it, up to a per-layer budget, and shrinks when groups get small again; the age
#   bound follows the observed interval (see KF_* below).
#
# Opus RED (RFC 2198) helpers are here too: the block headers carry payload types, which the
# forwarder rewrites to the viewer's numbering (or it strips RED down to the primary block when
# the viewer did not negotiate RED).

cdef enum:
    RECV_WINDOW = 4096          # bits of received history per stream (about 4 s at 1000 packets/s)
    RECV_WORDS = 64             # RECV_WINDOW / 64
    GAP_RING = 64               # gaps recorded between two polls; more = too much loss (keyframe)
    R_NEW = 0                   # recvlog_add results
    R_GAP = 1
    R_FILL = 2
    R_DUP = -1
    R_TOO_OLD = -2

# Keyframe cache sizing. OBS setups often use a 4-5 s keyframe interval (some 10 s), and a viewer
# can start only from a cached group that reaches back to its keyframe: the cache must hold one
# whole group of pictures, whatever its length, but one stream must not take unbounded memory.
cdef enum:
    KF_INITIAL_ARENA = 262144   # 256 KiB to start: a 2 s group at 1 Mbit/s; grows by half
    KF_INITIAL_SLOTS = 256
    # Per video layer (InStream): 8 MiB holds a 10 s group at 6.7 Mbit/s (OBS 1080p60 at 6 Mbit/s
    # with a 10 s interval: 7.5 MB). A group that outgrows it is dropped (`overflows` counted):
    # until the next keyframe start, new viewers wait for the publisher's keyframe as without a
    # cache (they ask for one with a PLI; an OBS-like publisher sends its next one on schedule).
    KF_BUDGET_BYTES = 8388608
    KF_MAX_PACKETS = 8192       # 10 s at 6.5 Mbit/s in 1,250-byte packets; 32 B of slot each
    KF_INTERVALS = 4            # keyframe intervals remembered for the age bound

DEF KF_AGE_FLOOR = 3.0          # seconds: the age bound for short intervals (2 s GOPs and PLI-driven)
DEF KF_AGE_FACTOR = 1.5         # a group may reach 1.5 x the longest recent interval (a late keyframe)
DEF KF_AGE_CEILING = 15.0       # never replay an older group (a 10 s interval x 1.5); also the bound
                                # while no interval has been seen yet (the first group of a stream)
DEF KF_REPLAY_STEP_S = 0.001    # seconds of RTP time between replayed frames (compressed group)
KF_MAX_AGE_S = KF_AGE_CEILING
KF_AGE_FLOOR_S = KF_AGE_FLOOR
KF_AGE_FACTOR_X = KF_AGE_FACTOR
KEYFRAME_CACHE_MAX_PACKETS = KF_MAX_PACKETS
KEYFRAME_CACHE_MAX_BYTES = KF_BUDGET_BYTES
KEYFRAME_CACHE_INITIAL_BYTES = KF_INITIAL_ARENA
KIND_LOSS = "loss"              # slow-path entry: some InStream recorded a gap (see take_loss_events)

# Per-OutTrack retransmission counters (index into OutTrack.rcount). Keep in sync with RTX_COUNTERS.
cdef enum:
    X_REQUESTED = 0             # sequence numbers asked for in viewers' NACKs
    X_SENT = 1                  # retransmissions sent (served)
    X_MISSING = 2               # not in the ring (never sent, or evicted): missed
    X_BEFORE_KEYFRAME = 3       # older than the last keyframe sent: ignored
    X_RECENT = 4                # already resent within the viewer's RTT: ignored
    X_RATE_LIMITED = 5          # the token bucket was empty: not sent
    X_FAILED = 6                # too large for RTX, protect failed
    X_BYTES = 7                 # bytes of retransmissions sent
    N_XCOUNT = 8

RTX_COUNTERS = ("requested", "sent", "missing", "before-keyframe", "recent", "rate-limited",
                "failed", "bytes")


# ---------------------------------------------------------------------------------------------
# RecvLog
# ---------------------------------------------------------------------------------------------

cdef struct RecvLog:
    uint64_t bits[RECV_WORDS]
    int64_t highest
    bint started
    int64_t gap_start[GAP_RING]
    int64_t gap_count[GAP_RING]
    uint64_t gap_written
    uint64_t gap_read
    uint64_t gap_overflows
    uint64_t duplicates
    uint64_t too_old
    uint64_t filled             # holes filled (late or retransmitted packets)
    uint64_t missing_total      # sequence numbers seen missing when a gap opened


cdef inline void _bit_set(RecvLog *r, int64_t s) noexcept nogil:
    cdef uint64_t i = (<uint64_t>s) & (RECV_WINDOW - 1)
    r.bits[i >> 6] |= (<uint64_t>1) << (i & 63)

cdef inline void _bit_clear(RecvLog *r, int64_t s) noexcept nogil:
    cdef uint64_t i = (<uint64_t>s) & (RECV_WINDOW - 1)
    r.bits[i >> 6] &= ~((<uint64_t>1) << (i & 63))

cdef inline bint _bit_get(const RecvLog *r, int64_t s) noexcept nogil:
    cdef uint64_t i = (<uint64_t>s) & (RECV_WINDOW - 1)
    return (r.bits[i >> 6] >> (i & 63)) & 1


cdef int recvlog_add(RecvLog *r, int64_t s) noexcept nogil:
    """Record extended sequence number `s`: R_NEW, R_GAP (a hole opened before it), R_FILL,
    R_DUP (already received) or R_TOO_OLD (behind the window: cannot tell, not forwarded)."""
    cdef int64_t d, x, missing
    cdef uint64_t slot
    if not r.started:
        r.started = True
        memset(r.bits, 0, sizeof(r.bits))
        r.highest = s
        _bit_set(r, s)
        return R_NEW
    if s > r.highest:
        d = s - r.highest
        if d == 1:
            _bit_set(r, s)
            r.highest = s
            return R_NEW
        missing = d - 1
        if missing >= RECV_WINDOW:
            memset(r.bits, 0, sizeof(r.bits))
        else:
            x = r.highest + 1
            while x < s:
                _bit_clear(r, x)
                x += 1
        if r.gap_written - r.gap_read >= GAP_RING:
            r.gap_overflows += 1
        else:
            slot = r.gap_written & (GAP_RING - 1)
            r.gap_start[slot] = r.highest + 1
            r.gap_count[slot] = missing
            r.gap_written += 1
        r.missing_total += missing
        _bit_set(r, s)
        r.highest = s
        return R_GAP
    if r.highest - s >= RECV_WINDOW:
        r.too_old += 1
        return R_TOO_OLD
    if _bit_get(r, s):
        r.duplicates += 1
        return R_DUP
    _bit_set(r, s)
    r.filled += 1
    return R_FILL


cdef inline int recvlog_state(const RecvLog *r, int64_t s) noexcept nogil:
    """1 received, 0 missing, -1 unknown (not started, ahead, or behind the window)."""
    if not r.started or s > r.highest or r.highest - s >= RECV_WINDOW:
        return -1
    return 1 if _bit_get(r, s) else 0


# ---------------------------------------------------------------------------------------------
# KfCache
# ---------------------------------------------------------------------------------------------

cdef struct KfSlot:
    uint32_t off
    int32_t length
    int64_t ext_seq
    int64_t ext_ts
    bint key


cdef struct KfCache:
    uint8_t *arena
    KfSlot *slots
    uint32_t arena_size         # bytes allocated for the arena (KF_INITIAL_ARENA..KF_BUDGET_BYTES)
    int slot_cap                # slots allocated (KF_INITIAL_SLOTS..KF_MAX_PACKETS)
    int count
    uint32_t used
    bint valid                  # a keyframe start is at slot 0 and nothing overflowed since
    int64_t key_ts              # extended timestamp of the cached keyframe
    double started_at
    uint64_t overflows
    double intervals[KF_INTERVALS]  # the last keyframe intervals (seconds), a ring
    int n_intervals
    uint64_t groups             # keyframe starts seen


cdef KfCache *kfcache_new() except NULL:
    cdef KfCache *c = <KfCache *>calloc(1, sizeof(KfCache))
    if c == NULL:
        raise MemoryError()
    c.arena = <uint8_t *>malloc(KF_INITIAL_ARENA)
    c.slots = <KfSlot *>calloc(KF_INITIAL_SLOTS, sizeof(KfSlot))
    if c.arena == NULL or c.slots == NULL:
        free(c.arena)
        free(c.slots)
        free(c)
        raise MemoryError()
    c.arena_size = KF_INITIAL_ARENA
    c.slot_cap = KF_INITIAL_SLOTS
    return c


cdef void kfcache_free(KfCache *c) noexcept nogil:
    if c != NULL:
        free(c.arena)
        free(c.slots)
        free(c)


cdef inline size_t kfcache_footprint(const KfCache *c) noexcept nogil:
    """Bytes this cache holds allocated (arena + slot table + itself)."""
    return c.arena_size + <size_t>c.slot_cap * sizeof(KfSlot) + sizeof(KfCache)


cdef inline double kfcache_max_age(const KfCache *c) noexcept nogil:
    """How old the cached group may get: KF_AGE_FACTOR x the longest of the last KF_INTERVALS
    keyframe intervals, within [KF_AGE_FLOOR, KF_AGE_CEILING]; the ceiling until one is seen."""
    cdef double longest = 0.0
    cdef int i
    if c.n_intervals == 0:
        return KF_AGE_CEILING
    for i in range(min(c.n_intervals, <int>KF_INTERVALS)):
        if c.intervals[i] > longest:
            longest = c.intervals[i]
    longest *= KF_AGE_FACTOR
    if longest < KF_AGE_FLOOR:
        return KF_AGE_FLOOR
    if longest > KF_AGE_CEILING:
        return KF_AGE_CEILING
    return longest


cdef inline bint kfcache_fresh(const KfCache *c, double now) noexcept nogil:
    return c.valid and c.count > 0 and now - c.started_at <= kfcache_max_age(c)


cdef bint _kfcache_grow(KfCache *c, int packets, uint32_t bytes_needed) noexcept nogil:
    """Room for `packets` slots and `bytes_needed` arena bytes within the budget (x 1.5 steps)."""
    cdef uint32_t size = c.arena_size
    cdef int cap = c.slot_cap
    cdef void *p
    if packets > KF_MAX_PACKETS or bytes_needed > KF_BUDGET_BYTES:
        return False
    while size < bytes_needed:
        size += size // 2                     # x 1.5: less slack than doubling at 4-8 MiB
    while cap < packets:
        cap += cap // 2
    if size > KF_BUDGET_BYTES:
        size = KF_BUDGET_BYTES
    if cap > KF_MAX_PACKETS:
        cap = KF_MAX_PACKETS
    if size != c.arena_size:
        p = realloc(c.arena, size)
        if p == NULL:
            return False
        c.arena = <uint8_t *>p
        c.arena_size = size
    if cap != c.slot_cap:
        p = realloc(c.slots, <size_t>cap * sizeof(KfSlot))
        if p == NULL:
            return False
        c.slots = <KfSlot *>p
        c.slot_cap = cap
    return True


cdef void _kfcache_shrink(KfCache *c) noexcept nogil:
    """At a new group: halve what the last group used less than a quarter of (the stream slowed
    down or its interval shortened); never below the initial sizes."""
    cdef void *p
    if c.arena_size > KF_INITIAL_ARENA and c.used < c.arena_size // 4:
        p = realloc(c.arena, c.arena_size // 2)
        if p != NULL:
            c.arena = <uint8_t *>p
            c.arena_size //= 2
    if c.slot_cap > KF_INITIAL_SLOTS and c.count < c.slot_cap // 4:
        p = realloc(c.slots, <size_t>(c.slot_cap // 2) * sizeof(KfSlot))
        if p != NULL:
            c.slots = <KfSlot *>p
            c.slot_cap //= 2


cdef inline void kfcache_add(KfCache *c, const uint8_t *p, int n, int64_t ext_seq, int64_t ext_ts,
                             int key, double now) noexcept nogil:
    cdef KfSlot *s
    if key and not (c.valid and ext_ts == c.key_ts):
        if c.groups:                          # a new keyframe: the interval since the last one
            c.intervals[c.n_intervals % KF_INTERVALS] = now - c.started_at
            c.n_intervals += 1
        c.groups += 1
        _kfcache_shrink(c)
        c.count = 0                           # start a new group of pictures
        c.used = 0
        c.valid = True
        c.key_ts = ext_ts
        c.started_at = now
    if not c.valid:
        return
    if now - c.started_at > kfcache_max_age(c) or (
            (c.count >= c.slot_cap or c.used + <uint32_t>n > c.arena_size)
            and not _kfcache_grow(c, c.count + 1, c.used + <uint32_t>n)):
        c.valid = False                       # bounds reached: no replay until the next keyframe
        c.overflows += 1
        return
    memcpy(c.arena + c.used, p, n)
    s = &c.slots[c.count]
    s.off = c.used
    s.length = n
    s.ext_seq = ext_seq
    s.ext_ts = ext_ts
    s.key = key != 0
    c.count += 1
    c.used += n


# ---------------------------------------------------------------------------------------------
# Opus RED (RFC 2198 §3)
# ---------------------------------------------------------------------------------------------

cdef int red_primary(const uint8_t *pl, int n, int *off) noexcept nogil:
    """Offset (in *off) and length of the primary block of a RED payload, or -1 if malformed."""
    cdef int i = 0, data = 0
    while i < n and (pl[i] & 0x80):
        if i + 4 > n:
            return -1
        data += ((pl[i + 2] & 0x03) << 8) | pl[i + 3]
        i += 4
    if i >= n:
        return -1
    i += 1                                    # the final one-byte header (F = 0)
    if i + data > n:
        return -1
    off[0] = i + data
    return n - i - data


cdef void red_rewrite_pts(uint8_t *pl, int n, int src_pt, int dst_pt) noexcept nogil:
    """Rewrite every block header's payload type `src_pt` to `dst_pt` in place."""
    cdef int i = 0
    while i < n:
        if (pl[i] & 0x7F) == src_pt:
            pl[i] = (pl[i] & 0x80) | (dst_pt & 0x7F)
        if not (pl[i] & 0x80):
            return
        i += 4


def red_primary_py(bytes payload):
    """Test hook: the primary block of a RED payload (None if malformed)."""
    cdef int off = 0
    cdef int n = red_primary(<const uint8_t *>PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), &off)
    return None if n < 0 else payload[off:off + n]


def red_rewrite_pts_py(bytes payload, int src_pt, int dst_pt):
    """Test hook: `payload` with its RED block headers' payload types rewritten."""
    cdef bytearray out = bytearray(payload)
    red_rewrite_pts(<uint8_t *>(<char *>out), len(out), src_pt, dst_pt)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Hooks called from the fast path (Router._process / _forward_one)
# ---------------------------------------------------------------------------------------------

cdef inline int _repair_receive(Router r, InStream media, const uint8_t *p, int n, int64_t ext_seq,
                                int64_t ext_ts) noexcept:
    """Received-bitmap bookkeeping of one media packet (and its copy in the layer's retransmission
    store, _resend.pxi): -1 when it must not be forwarded."""
    cdef int res = recvlog_add(&media.rlog, ext_seq)
    if res == R_DUP or res == R_TOO_OLD:
        return -1
    if media.store != NULL:
        srcstore_put(media.store, p, n, ext_seq, ext_ts, r.now)
    if res == R_GAP and not media.loss_flagged:
        media.loss_flagged = True
        if r.loss_events is None:
            r.loss_events = []
        r.loss_events.append(media)
    return 0


cdef inline int _red_adjust(OutTrack o, const uint8_t *p, RtpView *v, int *body_off, int *body_len,
                            int *pt) noexcept nogil:
    """RED towards this viewer: 1 = rewrite inner payload types after the copy, 0 = nothing to do,
    -1 = malformed (strip failed: forward unchanged)."""
    cdef int off = 0, m
    if o.src_red_pt < 0 or v.pt != o.src_red_pt:
        return 0
    if o.red_pt >= 0:
        pt[0] = o.red_pt
        return 1 if o.src_payload_type != o.payload_type else 0
    m = red_primary(p + v.payload_off, v.payload_len, &off)
    if m <= 0:
        return -1
    body_off[0] = v.payload_off + off
    body_len[0] = m
    return 0


# ---------------------------------------------------------------------------------------------
# Router-side operations Python calls (delegated from Router methods)
# ---------------------------------------------------------------------------------------------

cdef int _repair_replay(Router r, InStream st, OutTrack o, double now) except -1:
    """Replay `st`'s keyframe cache into `o` (gated on a keyframe, sendable). Returns packets sent,
    0 when there was nothing to do, -1 never (exceptions only)."""
    cdef KfCache *c = st.kfc
    cdef Endpoint ep = o.ep
    cdef int i, sent = 0
    cdef RtpView v
    cdef const uint8_t *p
    cdef uint64_t before
    cdef int64_t step, frame, real_ts, fake_ts
    if o not in st.outs or not o.video:
        return 0
    if not ep.has_path or ep.tx is None:
        return 0
    if o.lr.pending == <void *>st:
        if c == NULL or not kfcache_fresh(c, now):
            st.cache_misses += 1
            return 0
        layer_gate(&o.lr, <void *>st, 1)     # a pending layer switch happens here, as in _fan_out
        o.rebase = True
        o.need_keyframe = True
        o.lr.pic_rebase = True
    elif o.lr.current != NULL and o.lr.current != <void *>st:
        return 0
    if not o.need_keyframe:
        return 0
    if c == NULL or not kfcache_fresh(c, now):
        st.cache_misses += 1
        return 0
    r.now = now
    before = o.packets
    # Compress the cached group's timestamps to one frame per KF_REPLAY_STEP_S: the replay arrives
    # as one burst, and with the source spacing a receiver would play the whole group (up to its
    # age, 1-2 s from OBS) behind the live edge. Compressed, the decoder still gets every frame, the
    # renderer shows the newest at once, and live frames continue at their true spacing from the
    # last cached one (the offset is moved after the loop).
    step = <int64_t>(o.clock_rate * KF_REPLAY_STEP_S)
    if step < 1:
        step = 1
    frame = 0
    real_ts = c.slots[0].ext_ts
    fake_ts = real_ts
    r.fwd_src = <void *>st
    for i in range(c.count):
        p = c.arena + c.slots[i].off
        if parse_rtp(p, c.slots[i].length, &v) < 0:
            continue
        if c.slots[i].ext_ts > real_ts:
            real_ts = c.slots[i].ext_ts
            frame += 1
            fake_ts = c.slots[0].ext_ts + frame * step
        # the resend path needs the source's own timestamp: the shift is its epoch's (_resend.pxi)
        r.ts_shift = fake_ts - real_ts if c.slots[i].ext_ts == real_ts else 0
        r._forward_one(o, p, c.slots[i].length, &v, c.slots[i].ext_seq,
                       fake_ts if c.slots[i].ext_ts == real_ts else c.slots[i].ext_ts,
                       1 if c.slots[i].key else 0)
    r.ts_shift = 0
    if o.packets != before and frame:
        o.ts_offset += fake_ts - real_ts      # live packets continue from the last replayed frame
    r.flush()
    sent = <int>(o.packets - before)
    if sent:
        st.cache_hits += 1
        st.cache_packets_replayed += sent
        o.cache_replays += 1
    else:
        st.cache_misses += 1
    return sent
