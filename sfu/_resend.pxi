# Retransmissions towards viewers (included from _fastpath.pyx, after _repair.pxi).
#
# The packets are kept ONCE per incoming layer, not once per subscriber:
#
# - SrcStore (one per InStream, allocated when the first subscriber that negotiated NACK attaches):
#   the source's plaintext packets as they were fanned out, keyed by the source's extended
#   sequence number, in a byte arena (power of two) indexed by a slot ring (power of two).
#   Bounded in packets, bytes and age (RTX_MAX_AGE).
# - Rewrite epochs (per OutTrack, a few dozen bytes each): every time the parameters of the
#   rewrite change (re-base at a new subscriber or publisher, layer switch, padding probe, a
#   keyframe-cache replay frame, picture-id re-base) a new epoch starts at that out sequence number
#   and records the source InStream, the sequence/timestamp offsets and the VP8/VP9 picture-id
#   offsets. out_seq -> epoch -> source seq -> store -> the packet is rewritten again, exactly as
#   `Router._forward_one` did (`rtx_rebuild` mirrors it), then RTX-wrapped and protected.
# - Same-SSRC resends must be byte-identical to the original (same SRTP packet index: an AES-CTR /
#   GCM nonce must never cover two different plaintexts), and the transport-wide sequence number
#   and abs-send-time differ per viewer and per send: for subscriptions without RFC 4588 RTX that
#   carry either extension, 8 bytes per packet sent are recorded (`sent_rec`, a power-of-two ring).
#   With RTX, the resend gets a fresh transport-wide number and the current send time.
#
# Per video subscription this is ~0.2-9 KiB instead of a 1 MiB arena; the memcpy per packet and
# subscriber is gone (one copy per source packet remains).

cdef enum:
    STORE_SLOTS_VIDEO = 2048    # source packets kept per video layer (power of two): ~6 s at 350/s
    STORE_ARENA_VIDEO = 1048576 # bytes per video layer (power of two): ~3 s at 2.5 Mbit/s
    STORE_SLOTS_AUDIO = 256     # per audio stream: ~5 s of 20 ms Opus packets
    STORE_ARENA_AUDIO = 65536
    EPOCHS_FIRST = 4            # rewrite epochs per subscription: allocated with the first one ...
    EPOCHS_MAX = 128            # ... doubled up to this (a keyframe-cache replay makes one per frame)
    RTX_SOURCES = 4             # InStreams one OutTrack's epochs may refer to (simulcast layers + 1)
    SENT_SLOTS_VIDEO = 512      # same-SSRC per-packet records (power of two): 1.5 s at 350 packets/s
    SENT_SLOTS_AUDIO = 128      # 2.5 s of 20 ms Opus packets
    RECENT_SLOTS = 64           # resends remembered per subscription (the "not twice per RTT" guard)

DEF RTX_MAX_AGE = 2.0           # seconds: an older packet is not resent (the receiver gave up on it)
RTX_MAX_AGE_S = RTX_MAX_AGE
RTX_STORE_BYTES_VIDEO = STORE_ARENA_VIDEO
RTX_STORE_SLOTS_VIDEO = STORE_SLOTS_VIDEO

DEF SENT_VALID = 0x8000000000000000


cdef struct SrcSlot:
    int64_t seq                 # source extended sequence number (-1: empty)
    int64_t ext_ts              # source extended timestamp
    uint64_t pos                # absolute arena position of the copy
    int32_t length
    double at                   # when it arrived (and was fanned out)


cdef struct SrcStore:
    uint8_t *arena
    uint64_t arena_size         # power of two
    uint64_t write_pos          # absolute; a copy at `pos` is intact while write_pos - pos <= arena_size
    SrcSlot *slots
    uint32_t nslots             # power of two
    uint64_t packets


cdef struct RtxEpoch:
    int64_t out_start           # first viewer extended sequence number of the epoch
    int64_t out_last            # highest one sent in it (padding probes after it are not its own)
    int64_t seq_offset          # out_seq = source ext seq + seq_offset
    int64_t ts_offset           # out_ts = source ext ts + ts_offset
    void *src                   # borrowed InStream; OutTrack.rtx_srcs holds the reference
    double started_at
    uint16_t pic_offset         # VP8 / VP9 picture id and TL0PICIDX offsets (_layers.pxi LayerRw)
    uint8_t tl0_offset


cdef struct Resent:
    int64_t seq                 # viewer extended sequence number (0: empty)
    double at


cdef SrcStore *srcstore_new(uint32_t nslots, uint64_t arena_size) except NULL:
    cdef SrcStore *s
    cdef uint32_t i
    if nslots == 0 or (nslots & (nslots - 1)) or arena_size < 4096 or (arena_size & (arena_size - 1)):
        raise ValueError("retransmission store sizes must be powers of two (arena >= 4096)")
    s = <SrcStore *>calloc(1, sizeof(SrcStore))
    if s == NULL:
        raise MemoryError()
    s.arena = <uint8_t *>malloc(arena_size)     # not touched until used: resident as it fills
    s.slots = <SrcSlot *>malloc(nslots * sizeof(SrcSlot))
    if s.arena == NULL or s.slots == NULL:
        free(s.arena)
        free(s.slots)
        free(s)
        raise MemoryError()
    s.arena_size = arena_size
    s.nslots = nslots
    for i in range(nslots):
        s.slots[i].seq = -1
    return s


cdef void srcstore_free(SrcStore *s) noexcept nogil:
    if s != NULL:
        free(s.arena)
        free(s.slots)
        free(s)


cdef inline void srcstore_put(SrcStore *s, const uint8_t *p, int n, int64_t seq, int64_t ext_ts,
                              double now) noexcept nogil:
    """Copy one source packet (once per packet, whatever the number of subscribers)."""
    cdef uint64_t off = s.write_pos & (s.arena_size - 1)
    cdef SrcSlot *slot
    if n <= 0 or <uint64_t>n > s.arena_size:
        return
    if off + n > s.arena_size:
        s.write_pos += s.arena_size - off    # wrap: the copy stays contiguous
        off = 0
    memcpy(s.arena + off, p, n)
    slot = &s.slots[(<uint64_t>seq) & (s.nslots - 1)]
    slot.seq = seq
    slot.ext_ts = ext_ts
    slot.pos = s.write_pos
    slot.length = n
    slot.at = now
    s.write_pos += n
    s.packets += 1


cdef inline SrcSlot *srcstore_get(SrcStore *s, int64_t seq) noexcept nogil:
    cdef SrcSlot *slot = &s.slots[(<uint64_t>seq) & (s.nslots - 1)]
    if slot.seq != seq or s.write_pos - slot.pos > s.arena_size:
        return NULL
    return slot


cdef inline const uint8_t *rtx_source(InStream src, int64_t seq, int *n, int64_t *ext_ts,
                                     double *at) noexcept nogil:
    """Source packet `seq` of `src`: from its store, else from its keyframe cache (a replayed group
    that arrived before the store existed). NULL when neither has it."""
    cdef SrcSlot *slot
    cdef KfCache *c = src.kfc
    cdef int i
    if src.store != NULL:
        slot = srcstore_get(src.store, seq)
        if slot != NULL:
            n[0] = slot.length
            ext_ts[0] = slot.ext_ts
            at[0] = slot.at
            return src.store.arena + (slot.pos & (src.store.arena_size - 1))
    if c != NULL:
        for i in range(c.count):
            if c.slots[i].ext_seq == seq:
                n[0] = c.slots[i].length
                ext_ts[0] = c.slots[i].ext_ts
                at[0] = c.started_at
                return c.arena + c.slots[i].off
    return NULL


cdef int srcstore_enable(InStream st) except -1:
    if st.store == NULL:
        if st.codec == C_AUDIO:
            st.store = srcstore_new(STORE_SLOTS_AUDIO, STORE_ARENA_AUDIO)
        else:
            st.store = srcstore_new(STORE_SLOTS_VIDEO, STORE_ARENA_VIDEO)
    return 0


# ---------------------------------------------------------------------------------------------
# Per OutTrack: epochs, same-SSRC records, recent resends
# ---------------------------------------------------------------------------------------------

cdef void rtx_forget_epochs(OutTrack o) noexcept:
    """The rewrite itself changed (extension ids, RED): earlier packets can no longer be rebuilt
    byte for byte, so they are not resent at all."""
    o.nepochs = 0


cdef void rtx_out_free(OutTrack o) noexcept:
    free(o.epochs)
    free(o.sent_rec)
    free(o.recent)
    o.epochs = NULL
    o.sent_rec = NULL
    o.recent = NULL
    o.nepochs = 0
    o.epochs_cap = 0
    o.sent_slots = 0


cdef bint _rtx_hold(OutTrack o, InStream src) noexcept:
    """Keep `src` alive while epochs point at it (at most RTX_SOURCES; the oldest one goes)."""
    cdef int i, j, k
    cdef void *gone
    cdef bint used
    try:
        if src.store == NULL:
            srcstore_enable(src)
        if o.rtx_srcs is None:
            o.rtx_srcs = []
        for i in range(len(o.rtx_srcs)):
            if o.rtx_srcs[i] is src:
                return True
        if len(o.rtx_srcs) >= RTX_SOURCES:
            # sources no epoch points at any more go first; else the oldest one and its epochs
            i = 0
            while i < len(o.rtx_srcs):
                gone = <void *>o.rtx_srcs[i]
                used = False
                for j in range(o.nepochs):
                    if o.epochs[j].src == gone:
                        used = True
                        break
                if used:
                    i += 1
                else:
                    del o.rtx_srcs[i]
            if len(o.rtx_srcs) >= RTX_SOURCES:
                gone = <void *>o.rtx_srcs[0]
                k = 0
                for j in range(o.nepochs):
                    if o.epochs[j].src != gone:
                        o.epochs[k] = o.epochs[j]
                        k += 1
                o.nepochs = k
                del o.rtx_srcs[0]
        o.rtx_srcs.append(src)
        return True
    except Exception:           # MemoryError: this epoch is not recorded (its resends miss)
        return False


cdef void _rtx_new_epoch(Router r, OutTrack o, int64_t out_seq, int64_t ts_offset) noexcept:
    cdef RtxEpoch *e
    cdef RtxEpoch *grown
    cdef int cap
    if r.fwd_src == NULL or not _rtx_hold(o, <InStream>r.fwd_src):
        o.nepochs = 0                         # never rebuild with stale parameters: resends miss
        return
    if o.nepochs and o.epochs[o.nepochs - 1].out_last >= out_seq:
        # inside the last epoch's range (a reordered packet under other parameters): the ranges
        # cannot be kept apart, so nothing sent so far is rebuilt (a miss is safe, a wrong copy not)
        o.nepochs = 0
    if o.nepochs == o.epochs_cap:
        if o.epochs_cap < EPOCHS_MAX:
            cap = o.epochs_cap * 2 if o.epochs_cap else EPOCHS_FIRST
            grown = <RtxEpoch *>realloc(o.epochs, cap * sizeof(RtxEpoch))
            if grown == NULL:
                o.nepochs = 0
                return
            o.epochs = grown
            o.epochs_cap = cap
        else:                                 # forget the older half
            memmove(o.epochs, o.epochs + EPOCHS_MAX // 2, (EPOCHS_MAX - EPOCHS_MAX // 2) * sizeof(RtxEpoch))
            o.nepochs -= EPOCHS_MAX // 2
    e = &o.epochs[o.nepochs]
    e.out_start = out_seq
    e.out_last = out_seq
    e.seq_offset = o.seq_offset
    e.ts_offset = ts_offset
    e.src = r.fwd_src
    e.started_at = r.now
    e.pic_offset = o.lr.pic_offset
    e.tl0_offset = o.lr.tl0_offset
    o.nepochs += 1


cdef inline void rtx_note(Router r, OutTrack o, int64_t out_seq, int64_t out_ts, int64_t ext_ts,
                          int64_t tw_seq, int key) noexcept:
    """Called by `_forward_one` for every packet sent to a subscription with NACK: remember how it
    was rewritten (a new epoch when that changed; a per-packet record only where needed)."""
    cdef RtxEpoch *e
    cdef int64_t ts_offset = out_ts - (ext_ts - r.ts_shift)   # against the source's own timestamp
    cdef uint64_t rec
    cdef uint32_t slots
    if key and out_ts != o.floor_ts:
        o.keyframe_floor = out_seq
        o.floor_ts = out_ts
    e = &o.epochs[o.nepochs - 1] if o.nepochs else NULL
    if (e == NULL or e.seq_offset != o.seq_offset or e.ts_offset != ts_offset or e.src != r.fwd_src
            or e.pic_offset != o.lr.pic_offset or e.tl0_offset != o.lr.tl0_offset):
        _rtx_new_epoch(r, o, out_seq, ts_offset)
    if o.nepochs:
        e = &o.epochs[o.nepochs - 1]
        if out_seq > e.out_last:
            e.out_last = out_seq
    if o.rtx_ssrc_set or not (o.twcc_id or o.abs_send_time_id):
        return
    if o.sent_rec == NULL:
        slots = SENT_SLOTS_VIDEO if o.video else SENT_SLOTS_AUDIO
        o.sent_rec = <uint64_t *>calloc(slots, sizeof(uint64_t))
        if o.sent_rec == NULL:
            return
        o.sent_slots = slots
    rec = SENT_VALID | (<uint64_t>out_seq & 0xFFFF)
    if tw_seq >= 0:
        rec |= (<uint64_t>tw_seq & 0xFFFF) << 16
    rec |= ((<uint64_t>(r.now * 262144.0)) & 0xFFFFFF) << 32
    o.sent_rec[(<uint64_t>out_seq) & (o.sent_slots - 1)] = rec


cdef inline RtxEpoch *rtx_epoch_for(OutTrack o, int64_t out_seq) noexcept nogil:
    cdef int i = o.nepochs - 1
    while i >= 0:
        if o.epochs[i].out_start <= out_seq:
            # past its last packet: a padding probe's number (or never sent): nothing to rebuild
            return &o.epochs[i] if out_seq <= o.epochs[i].out_last else NULL
        i -= 1
    return NULL


cdef void rewrite_picture_ids_fixed(int codec, uint8_t *p, int n, uint16_t pic_offset,
                                    uint8_t tl0_offset) noexcept nogil:
    """`rewrite_picture_ids` (_layers.pxi) with given offsets and no state change (a resend)."""
    cdef int pic_off, pic_long = 0, tl0_off, rc
    cdef uint16_t pic, outp
    if codec == C_VP8:
        rc = vp8_picture_fields(p, n, &pic_off, &pic_long, &tl0_off)
    else:
        rc = vp9_picture_fields(p, n, &pic_off, &pic_long, &tl0_off)
    if rc < 0:
        return
    if pic_off >= 0:
        pic = ((<uint16_t>(p[pic_off] & 0x7F) << 8) | p[pic_off + 1]) if pic_long else (p[pic_off] & 0x7F)
        outp = (pic + pic_offset) & 0x7FFF
        if pic_long:
            p[pic_off] = 0x80 | (outp >> 8)
            p[pic_off + 1] = outp & 0xFF
        else:
            p[pic_off] = outp & 0x7F
    if tl0_off >= 0:
        p[tl0_off] = (p[tl0_off] + tl0_offset) & 0xFF


cdef int rtx_rebuild(OutTrack o, const RtxEpoch *e, const uint8_t *p, int n, int64_t out_seq,
                     int64_t out_ts, uint64_t tw_seq, uint64_t ast, uint8_t *q, int *hdr_out,
                     int *twcc_off) noexcept:
    """Rewrite source packet `p` into `q` as `Router._forward_one` did (keep the two in step):
    header, extensions with the viewer's ids (abs-send-time `ast` and transport-wide `tw_seq` as
    given), RED, picture ids with the epoch's offsets. Returns the length, -1 if it cannot be."""
    cdef RtpView v
    cdef int hdr, i, end, eid, elen, w, pad, body_len, body_off, nid, two_byte, red = 0
    cdef int out_pt = o.payload_type
    cdef int codec = (<InStream>e.src).codec
    if parse_rtp(p, n, &v) < 0:
        return -1
    twcc_off[0] = -1
    q[0] = 0x80
    q[1] = (0x80 if v.marker else 0) | (o.payload_type & 0x7F)
    wr16(q + 2, <uint16_t>(out_seq & 0xFFFF))
    wr32(q + 4, <uint32_t>(out_ts & 0xFFFFFFFF))
    wr32(q + 8, o.ssrc)
    hdr = 12
    two_byte = (v.ext_profile & 0xFFF0) == 0x1000
    w = hdr + 4
    if v.ext_off:
        i = v.ext_off
        end = v.ext_off + v.ext_len
        while i < end:
            if p[i] == 0:
                i += 1
                continue
            if two_byte:
                if i + 2 > end:
                    break
                eid = p[i]
                elen = p[i + 1]
                i += 2
            else:
                eid = p[i] >> 4
                elen = (p[i] & 0x0F) + 1
                i += 1
                if eid == 15:
                    break
            if i + elen > end:
                break
            nid = o.ext_map[eid]
            if nid and nid != o.twcc_id and nid != o.abs_send_time_id:
                if two_byte:
                    q[w] = nid
                    q[w + 1] = elen
                    w += 2
                else:
                    q[w] = (nid << 4) | (elen - 1)
                    w += 1
                memcpy(q + w, p + i, elen)
                w += elen
            i += elen
    if o.abs_send_time_id:
        if two_byte:
            q[w] = o.abs_send_time_id
            q[w + 1] = 3
            w += 2
        else:
            q[w] = (o.abs_send_time_id << 4) | 2
            w += 1
        q[w] = (ast >> 16) & 0xFF
        q[w + 1] = (ast >> 8) & 0xFF
        q[w + 2] = ast & 0xFF
        w += 3
    if o.twcc_id:
        if two_byte:
            q[w] = o.twcc_id
            q[w + 1] = 2
            w += 2
        else:
            q[w] = (o.twcc_id << 4) | 1
            w += 1
        twcc_off[0] = w
        wr16(q + w, <uint16_t>(tw_seq & 0xFFFF))
        w += 2
    if w > hdr + 4:
        while (w - hdr - 4) & 3:
            q[w] = 0
            w += 1
        wr16(q + hdr, 0x1000 if two_byte else 0xBEDE)
        wr16(q + hdr + 2, <uint16_t>((w - hdr - 4) // 4))
        q[0] |= 0x10
        hdr = w
    body_len = v.payload_len
    pad = n - v.payload_off - v.payload_len
    body_off = v.payload_off
    if o.src_red_pt >= 0:
        red = _red_adjust(o, p, &v, &body_off, &body_len, &out_pt)
        q[1] = (q[1] & 0x80) | (out_pt & 0x7F)
    if hdr + body_len + pad + 16 > OUT_CAPACITY:
        return -1
    memcpy(q + hdr, p + body_off, body_len + pad)
    if red == 1:
        red_rewrite_pts(q + hdr, body_len, o.src_payload_type, o.payload_type)
    if codec == C_VP8 or codec == C_VP9:
        rewrite_picture_ids_fixed(codec, q + hdr, body_len, e.pic_offset, e.tl0_offset)
    if pad:
        q[0] |= 0x20
    hdr_out[0] = hdr
    return hdr + body_len + pad


cdef object _repair_resend(Router r, OutTrack o, object seqs, double now):
    """Answer one NACK packet of a viewer: each packet rebuilt from its layer's store. Returns the
    extended sequence numbers that could not be (for an upstream NACK)."""
    cdef Endpoint ep = o.ep
    cdef list missed = []
    cdef int64_t ext, rseq
    cdef int n, out_len, hdr = 0, tw_off = -1, k
    cdef uint8_t *q
    cdef RtxEpoch *e
    cdef InStream src
    cdef const uint8_t *p
    cdef int plen = 0
    cdef int64_t src_ts = 0
    cdef double arrived = 0
    cdef Resent *rs
    cdef double elapsed, sent_at
    cdef uint16_t s16
    cdef uint64_t rec = 0, tw = 0, ast
    cdef bint need_rec
    if not o.rtx_on:
        o.rcount[X_REQUESTED] += len(seqs)
        o.rcount[X_MISSING] += len(seqs)
        return missed
    if not ep.has_path or ep.tx is None:
        return missed
    r.now = now
    # token bucket refill
    elapsed = now - o.rtx_refilled_at
    if elapsed > 0:
        o.rtx_tokens += elapsed * o.rtx_rate
        if o.rtx_tokens > o.rtx_burst:
            o.rtx_tokens = o.rtx_burst
    o.rtx_refilled_at = now
    need_rec = not o.rtx_ssrc_set and (o.twcc_id or o.abs_send_time_id)
    for item in seqs:
        s16 = <uint16_t>(<int>item & 0xFFFF)
        o.rcount[X_REQUESTED] += 1
        ext = unwrap16(o.last_out_seq, s16)
        if ext < o.keyframe_floor:
            o.rcount[X_BEFORE_KEYFRAME] += 1
            continue
        e = rtx_epoch_for(o, ext) if ext <= <int64_t>o.last_out_seq else NULL
        p = NULL
        if e != NULL:
            src = <InStream>e.src
            p = rtx_source(src, ext - e.seq_offset, &plen, &src_ts, &arrived)
        if p != NULL and need_rec:
            rec = o.sent_rec[(<uint64_t>ext) & (o.sent_slots - 1)] if o.sent_rec != NULL else 0
            if not (rec & SENT_VALID) or (rec & 0xFFFF) != (<uint64_t>ext & 0xFFFF):
                p = NULL                      # never sent, or too long ago: the bytes cannot be the same
        if p == NULL:
            o.rcount[X_MISSING] += 1
            missed.append(ext)
            continue
        sent_at = arrived if arrived > e.started_at else e.started_at
        if now - sent_at > RTX_MAX_AGE:
            o.rcount[X_MISSING] += 1
            missed.append(ext)
            continue
        # "Not twice within an RTT" guards RE-sends only: a receiver NACKs as soon as the next packet
        # shows the gap, which on a short path is well within an RTT of the original send, and
        # refusing that first request costs a whole NACK retry interval (~100 ms in Chromium).
        rs = NULL
        sent_at = -1.0
        if o.recent != NULL:
            rs = &o.recent[(<uint64_t>ext) & (RECENT_SLOTS - 1)]
            if rs.seq == ext:
                sent_at = rs.at
        if sent_at >= 0 and now - sent_at < o.rtx_min_interval:
            # sent (or resent) less than an RTT ago: this NACK cannot have seen it missing
            o.rcount[X_RECENT] += 1
            continue
        if r.npending >= SEND_BATCH:
            r.flush()
        q = r.sbuf + r.npending * OUT_CAPACITY
        if need_rec:
            tw = (rec >> 16) & 0xFFFF
            ast = (rec >> 32) & 0xFFFFFF
        else:
            ast = (<uint64_t>(now * 262144.0)) & 0xFFFFFF
        n = rtx_rebuild(o, e, p, plen, ext, src_ts + e.ts_offset, tw, ast, q, &hdr, &tw_off)
        if n < 0:
            o.rcount[X_FAILED] += 1
            continue
        if o.rtx_tokens < n:
            o.rcount[X_RATE_LIMITED] += 1
            continue
        if o.rtx_ssrc_set:
            # RFC 4588 §4: RTX packet = original header with the RTX PT, SSRC and sequence number,
            # then the original sequence number (OSN), then the original payload.
            if n + 2 + 16 > OUT_CAPACITY:
                o.rcount[X_FAILED] += 1
                continue
            memmove(q + hdr + 2, q + hdr, n - hdr)
            wr16(q + hdr, <uint16_t>(ext & 0xFFFF))
            n += 2
            q[1] = (q[1] & 0x80) | (o.rtx_pt & 0x7F)
            rseq = o.rtx_next_seq
            o.rtx_next_seq += 1
            wr16(q + 2, <uint16_t>(rseq & 0xFFFF))
            wr32(q + 8, o.rtx_ssrc)
            if tw_off >= 0:
                # a new transport-wide sequence number: the bandwidth estimate counts this packet
                wr16(q + tw_off, <uint16_t>(ep.twcc_next & 0xFFFF))
                ep.twcc_next += 1
            out_len = ep.tx.protect_rtp(q, n, OUT_CAPACITY, <uint64_t>(rseq - SEQ_BASE) & INDEX_MASK)
        else:
            # Same SSRC: byte-identical plaintext under the same packet index gives the same
            # ciphertext (an AES-CTR/GCM nonce must never cover two different plaintexts).
            out_len = ep.tx.protect_rtp(q, n, OUT_CAPACITY, <uint64_t>(ext - SEQ_BASE) & INDEX_MASK)
        if out_len < 0:
            o.rcount[X_FAILED] += 1
            continue
        if o.recent == NULL:
            o.recent = <Resent *>calloc(RECENT_SLOTS, sizeof(Resent))
        if o.recent != NULL:
            rs = &o.recent[(<uint64_t>ext) & (RECENT_SLOTS - 1)]
            rs.seq = ext
            rs.at = now
        o.rtx_tokens -= n
        o.rcount[X_SENT] += 1
        o.rcount[X_BYTES] += out_len
        r.siov[r.npending].iov_len = out_len
        memcpy(&r.saddrs[r.npending], &ep.path, ep.path_len)
        r.slocal[r.npending] = ep.path_local
        r.sendto_ep[r.npending] = <PyObject *>ep
        r.smsgs[r.npending].msg_hdr.msg_namelen = ep.path_len
        r.npending += 1
        ep.tx_packets += 1
        ep.tx_bytes += out_len
    r.flush()
    return missed
