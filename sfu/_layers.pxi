# Included by _fastpath.pyx (`include "_layers.pxi"`): the per-packet parts of simulcast layer
# switching and send-side bandwidth estimation. Decisions (which layer, how much padding, the
# timestamp hint) are Python's (sfu/core/allocator.py, sfu/core/layers.py, sfu/core/bwe.py); this
# file does only what runs for each packet:
#
# - `LayerInfo` (on InStream): what the keyframe sniffer saw of a layer's picture size. VP8 and VP9
#   give width/height here (RFC 6386 §9.1 keyframe header; VP9 payload descriptor scalability
#   structure); H.264 SPS / AV1 sequence header bytes are copied for Python to parse.
# - `LayerRw` (on OutTrack): the source gate (forward the current layer until the target layer's
#   keyframe arrives, then switch in one packet: no freeze), timestamp alignment at a switch from a
#   sender-report hint, VP8 / VP9 picture id and TL0PICIDX continuity, padding probes.
# - `SendLog` (on Endpoint): send time and size per outgoing transport-wide sequence number, so
#   transport-cc feedback from a viewer can be matched to what was sent.
#
# VP8 / VP9: the picture id (7 or 15 bits) and TL0PICIDX are rewritten with per-subscription offsets
# recomputed at every switch, so the viewer sees them continue (+1) across layers. AV1: the
# dependency descriptor is forwarded unchanged; a switch lands on a keyframe, whose descriptor
# carries a fresh template structure, so the receiver re-syncs there (frame numbers are not
# rewritten). H.264: nothing beyond sequence number / timestamp (the IDR carries SPS/PPS).

DEF SENDLOG_INITIAL = 256      # outgoing transport-wide records per endpoint at first (power of two)
DEF SENDLOG_MAX = 4096         # at most: feedback comes every 50-100 ms and probes time out after 1 s,
DEF SENDLOG_HORIZON_US = 1000000  # so the ring doubles while it would overwrite a record younger than 1 s
                               # (16 B a record: 4 KiB at first, 8 KiB at ~300 packets/s, 64 KiB at most)
DEF CONFIG_MAX = 160           # bytes of an H.264 SPS / AV1 sequence header kept for Python to parse
DEF PAD_PAYLOAD = 255          # RFC 3550 §5.1: the padding count is one octet
DEF MAX_TS_JUMP_S = 5          # a sender-report hint further ahead than this is not trusted

SEND_FLAG_PADDING = 1


cdef struct SendRecord:
    uint32_t seq                    # low 32 bits of the extended transport-wide sequence number (tag)
    uint16_t size
    uint8_t flags
    int64_t sent_us                 # 0: empty


cdef struct SendLog:
    SendRecord *rec
    uint32_t mask                   # capacity - 1


cdef struct LayerInfo:
    int width
    int height
    int config_len                  # bytes in `config` (H.264 SPS NAL / AV1 payload)
    uint64_t config_count           # bumps at every copy: Python re-parses when it moves
    uint8_t config[CONFIG_MAX]


cdef struct LayerRw:
    void *current                   # borrowed InStream feeding the viewer (None/NULL: any)
    void *pending                   # borrowed InStream to switch to at its next keyframe
    int codec                       # of the source (picture ids are rewritten for VP8 / VP9)
    bint hint_valid
    uint32_t hint32                 # out_ts = (in_ts + hint32) mod 2**32 on the pending layer
    uint64_t switches, switch_waits, ts_from_hint, ts_from_arrival
    # VP8 / VP9 picture id continuity
    bint pic_rebase
    bint pic_valid
    uint16_t last_pic               # 15-bit
    uint16_t pic_offset
    bint tl0_valid
    uint8_t last_tl0
    uint8_t tl0_offset
    # padding probes
    int64_t pad_budget              # bytes still to send as padding (Python adds, frames drain)
    uint64_t pad_packets, pad_bytes


cdef SendLog *sendlog_new() noexcept nogil:
    cdef SendLog *log = <SendLog *>calloc(1, sizeof(SendLog))
    if log == NULL:
        return NULL
    log.rec = <SendRecord *>calloc(SENDLOG_INITIAL, sizeof(SendRecord))
    if log.rec == NULL:
        free(log)
        return NULL
    log.mask = SENDLOG_INITIAL - 1
    return log


cdef void sendlog_free(SendLog *log) noexcept nogil:
    if log != NULL:
        free(log.rec)
        free(log)


cdef void sendlog_grow(SendLog *log) noexcept nogil:
    """Double the ring, every record moving to its slot under the new mask (no record is lost)."""
    cdef uint32_t cap = (log.mask + 1) * 2, i
    cdef SendRecord *rec = <SendRecord *>calloc(cap, sizeof(SendRecord))
    if rec == NULL:
        return   # keep the smaller ring: older records are overwritten sooner
    for i in range(log.mask + 1):
        if log.rec[i].sent_us != 0:
            rec[log.rec[i].seq & (cap - 1)] = log.rec[i]
    free(log.rec)
    log.rec = rec
    log.mask = cap - 1


cdef inline void sendlog_record(SendLog *log, uint64_t seq, double now, int size, int flags) noexcept nogil:
    cdef int64_t now_us = <int64_t>(now * 1e6)
    cdef SendRecord *r = &log.rec[seq & log.mask]
    if r.sent_us != 0 and now_us - r.sent_us < SENDLOG_HORIZON_US and log.mask + 1 < SENDLOG_MAX:
        sendlog_grow(log)
        r = &log.rec[seq & log.mask]
    r.seq = <uint32_t>seq
    r.sent_us = now_us
    r.size = size if size < 65535 else 65535
    r.flags = flags


cdef inline SendRecord *sendlog_find(SendLog *log, uint64_t seq) noexcept nogil:
    """The record of transport-wide sequence `seq`, or NULL when the ring no longer holds it."""
    cdef SendRecord *r
    if log == NULL:
        return NULL
    r = &log.rec[seq & log.mask]
    if r.seq != <uint32_t>seq or r.sent_us == 0:
        return NULL
    return r


cdef inline void info_copy(LayerInfo *info, const uint8_t *p, int n) noexcept nogil:
    if n > CONFIG_MAX:
        n = CONFIG_MAX
    if n <= 0:
        return
    memcpy(info.config, p, n)
    info.config_len = n
    info.config_count += 1


cdef void sniff_layer_info(LayerInfo *info, const uint8_t *p, int n, int codec) noexcept nogil:
    """Called on a keyframe's first packet: record the picture size or the bytes it is coded in."""
    cdef int i, off, size, nal, ns, k
    if n <= 0:
        return
    if codec == C_VP8:
        # RFC 7741 §4.2 descriptor, then RFC 6386 §9.1: 3-byte tag, 9d 01 2a, 14-bit width / height.
        off = 1
        if p[0] & 0x80:
            if n < 2:
                return
            off = 2
            if p[1] & 0x80:
                if n <= off:
                    return
                off += 2 if (p[off] & 0x80) else 1
            if p[1] & 0x40:
                off += 1
            if p[1] & 0x30:
                off += 1
        if off + 10 > n or p[off + 3] != 0x9D or p[off + 4] != 0x01 or p[off + 5] != 0x2A:
            return
        info.width = (p[off + 6] | (p[off + 7] << 8)) & 0x3FFF
        info.height = (p[off + 8] | (p[off + 9] << 8)) & 0x3FFF
    elif codec == C_VP9:
        # draft-ietf-payload-vp9 §4.2: I P L F B E V Z, then picture id, layer indices, SS (V bit).
        if not (p[0] & 0x02):
            return
        off = 1
        if p[0] & 0x80:
            if n < 2:
                return
            off += 2 if (p[1] & 0x80) else 1
        if p[0] & 0x20:
            off += 1 if (p[0] & 0x10) else 2
        if off >= n:
            return
        ns = (p[off] >> 5) + 1
        if not (p[off] & 0x10):     # Y: no resolutions present
            return
        off += 1
        if off + 4 * ns > n:
            return
        k = off + 4 * (ns - 1)      # the highest spatial layer's size
        info.width = rd16(p + k)
        info.height = rd16(p + k + 2)
    elif codec == C_H264:
        # RFC 6184: the SPS (NAL type 7) alone or inside a STAP-A (24).
        nal = p[0] & 0x1F
        if nal == 7:
            info_copy(info, p, n)
        elif nal == 24:
            i = 1
            while i + 2 < n:
                size = rd16(p + i)
                if size == 0 or i + 2 + size > n:
                    return
                if (p[i + 2] & 0x1F) == 7:
                    info_copy(info, p + i + 2, size)
                    return
                i += 2 + size
    elif codec == C_AV1:
        info_copy(info, p, n)


cdef inline int vp8_picture_fields(uint8_t *p, int n, int *pic_off, int *pic_long, int *tl0_off) noexcept nogil:
    """Offsets of the picture id (and whether it is 15-bit) and TL0PICIDX in a VP8 descriptor."""
    cdef int off
    pic_off[0] = -1
    tl0_off[0] = -1
    if n < 1 or not (p[0] & 0x80):
        return 0
    if n < 2:
        return -1
    off = 2
    if p[1] & 0x80:
        if off >= n:
            return -1
        pic_off[0] = off
        pic_long[0] = (p[off] & 0x80) != 0
        if pic_long[0] and off + 1 >= n:   # a 15-bit picture id cut short: not ours to rewrite
            pic_off[0] = -1
            return -1
        off += 2 if pic_long[0] else 1
    if p[1] & 0x40:
        if off >= n:
            return -1
        tl0_off[0] = off
    return 0


cdef inline int vp9_picture_fields(uint8_t *p, int n, int *pic_off, int *pic_long, int *tl0_off) noexcept nogil:
    """Same for VP9: picture id (I), TL0PICIDX only in non-flexible mode (L set, F clear)."""
    cdef int off = 1
    pic_off[0] = -1
    tl0_off[0] = -1
    if n < 1:
        return -1
    if p[0] & 0x80:
        if off >= n:
            return -1
        pic_off[0] = off
        pic_long[0] = (p[off] & 0x80) != 0
        if pic_long[0] and off + 1 >= n:
            pic_off[0] = -1
            return -1
        off += 2 if pic_long[0] else 1
    if (p[0] & 0x20) and not (p[0] & 0x10):
        if off + 1 >= n:
            return -1
        tl0_off[0] = off + 1
    return 0


cdef void rewrite_picture_ids(LayerRw *lr, int codec, uint8_t *p, int n) noexcept nogil:
    """Keep picture id / TL0PICIDX continuous for the viewer across layers (in the output buffer)."""
    cdef int pic_off, pic_long = 0, tl0_off, rc
    cdef uint16_t pic, outp
    cdef uint8_t tl0, outt
    if codec == C_VP8:
        rc = vp8_picture_fields(p, n, &pic_off, &pic_long, &tl0_off)
    else:
        rc = vp9_picture_fields(p, n, &pic_off, &pic_long, &tl0_off)
    if rc < 0:
        return
    if pic_off >= 0:
        pic = ((<uint16_t>(p[pic_off] & 0x7F) << 8) | p[pic_off + 1]) if pic_long else (p[pic_off] & 0x7F)
        if lr.pic_rebase:
            lr.pic_offset = ((lr.last_pic + 1 - pic) & 0x7FFF) if lr.pic_valid else 0
        outp = (pic + lr.pic_offset) & 0x7FFF
        if pic_long:
            p[pic_off] = 0x80 | (outp >> 8)
            p[pic_off + 1] = outp & 0xFF
        else:
            p[pic_off] = outp & 0x7F
        if not lr.pic_valid or ((outp - lr.last_pic) & 0x7FFF) < 0x4000:
            lr.last_pic = outp
        lr.pic_valid = True
    if tl0_off >= 0:
        tl0 = p[tl0_off]
        if lr.pic_rebase:
            lr.tl0_offset = (lr.last_tl0 + 1 - tl0) & 0xFF if lr.tl0_valid else 0
        outt = (tl0 + lr.tl0_offset) & 0xFF
        p[tl0_off] = outt
        if not lr.tl0_valid or ((outt - lr.last_tl0) & 0xFF) < 0x80:
            lr.last_tl0 = outt
        lr.tl0_valid = True
    lr.pic_rebase = False


cdef inline int layer_gate(LayerRw *lr, void *source, int key) noexcept nogil:
    """Whether a packet of `source` feeds this subscription: 0 no, 1 yes, 2 yes and it is the
    target layer's keyframe, where the switch happens (the caller re-bases the rewrite there)."""
    if lr.pending != NULL and source == lr.pending:
        if not key:
            lr.switch_waits += 1
            return 0
        lr.current = lr.pending
        lr.pending = NULL
        lr.switches += 1
        return 2
    return 1 if (lr.current == NULL or source == lr.current) else 0


cdef inline void align_timestamp(LayerRw *lr, bint has_out, uint64_t last_out_ts, int64_t *ts_offset,
                                 int64_t ext_ts, uint32_t in_ts, int clock_rate) noexcept nogil:
    """After the arrival-time re-base: use the sender-report hint when it keeps time monotonic."""
    cdef int64_t candidate
    if lr.hint_valid and has_out:
        candidate = unwrap32(last_out_ts, <uint32_t>(in_ts + lr.hint32))
        if candidate > <int64_t>last_out_ts and candidate - <int64_t>last_out_ts <= <int64_t>MAX_TS_JUMP_S * clock_rate:
            ts_offset[0] = candidate - ext_ts
            lr.ts_from_hint += 1
            lr.hint_valid = False
            return
    lr.ts_from_arrival += 1
    lr.hint_valid = False


cdef void emit_padding(Router r, OutTrack o, Endpoint ep, int64_t ext_seq) noexcept:
    """Padding-only packets (RFC 3550 §5.1 P bit) right after a frame ends: a bandwidth probe.

    They take the next sequence numbers (the offset moves on by one each), so packets of the
    source older than this point can no longer be placed: the fence (`start_in_seq`) drops them."""
    cdef uint8_t *q
    cdef int w, out_len
    cdef uint64_t tseq
    cdef int64_t out_seq
    cdef int64_t tw_seq
    while o.lr.pad_budget > 0:
        if r.npending >= SEND_BATCH:
            r.flush()
        q = r.sbuf + r.npending * OUT_CAPACITY
        out_seq = <int64_t>o.last_out_seq + 1
        q[0] = 0xA0
        q[1] = o.payload_type & 0x7F
        wr16(q + 2, <uint16_t>(out_seq & 0xFFFF))
        wr32(q + 4, <uint32_t>(o.last_out_ts & 0xFFFFFFFF))
        wr32(q + 8, o.ssrc)
        w = 16
        tw_seq = -1
        if o.abs_send_time_id:
            tseq = <uint64_t>(r.now * 262144.0)
            q[w] = (o.abs_send_time_id << 4) | 2
            q[w + 1] = (tseq >> 16) & 0xFF
            q[w + 2] = (tseq >> 8) & 0xFF
            q[w + 3] = tseq & 0xFF
            w += 4
        if o.twcc_id:
            tw_seq = ep.twcc_next
            ep.twcc_next += 1
            q[w] = (o.twcc_id << 4) | 1
            wr16(q + w + 1, <uint16_t>(tw_seq & 0xFFFF))
            w += 3
        if w > 16:
            while (w - 16) & 3:
                q[w] = 0
                w += 1
            wr16(q + 12, 0xBEDE)
            wr16(q + 14, <uint16_t>((w - 16) // 4))
            q[0] |= 0x10
        else:
            w = 12
        memset(q + w, 0, PAD_PAYLOAD - 1)
        q[w + PAD_PAYLOAD - 1] = PAD_PAYLOAD
        out_len = ep.tx.protect_rtp(q, w + PAD_PAYLOAD, OUT_CAPACITY, <uint64_t>(out_seq - SEQ_BASE) & INDEX_MASK)
        if out_len < 0:
            o.lr.pad_budget = 0
            return
        o.last_out_seq = out_seq
        o.seq_offset += 1
        o.start_in_seq = ext_seq + 1
        o.lr.pad_budget -= out_len
        o.lr.pad_packets += 1
        o.lr.pad_bytes += out_len
        if tw_seq >= 0:
            if ep.sendlog == NULL:
                ep.sendlog = sendlog_new()
            if ep.sendlog != NULL:
                sendlog_record(ep.sendlog, tw_seq, r.now, out_len, SEND_FLAG_PADDING)
        r.siov[r.npending].iov_len = out_len
        memcpy(&r.saddrs[r.npending], &ep.path, ep.path_len)
        r.slocal[r.npending] = ep.path_local
        r.sendto_ep[r.npending] = <PyObject *>ep
        r.smsgs[r.npending].msg_hdr.msg_namelen = ep.path_len
        r.npending += 1
        ep.tx_packets += 1
        ep.tx_bytes += out_len


# ---------------------------------------------------------------------------------------------
# Python surface (typed in _fastpath.pyi)
# ---------------------------------------------------------------------------------------------

def layer_info(InStream st):
    """(width, height, config bytes, config count) the keyframe sniffer last saw on `st`."""
    return (st.info.width, st.info.height,
            PyBytes_FromStringAndSize(<char *>st.info.config, st.info.config_len), st.info.config_count)


def set_source(OutTrack o, InStream st):
    """`st` feeds `o` from now on (re-based at its next keyframe); any pending switch is dropped."""
    o.lr.current = <void *>st if st is not None else NULL
    if st is not None:
        o.lr.codec = st.codec
    o.lr.pending = NULL
    o.lr.hint_valid = False
    o.lr.pic_rebase = True


def switch_source(OutTrack o, InStream target, hint32=None):
    """Keep forwarding the current source until `target`'s next keyframe, then switch there.

    `hint32` (optional): the viewer's timestamp is `(target_ts + hint32) mod 2**32` (computed from
    both layers' sender reports); ignored when it would not keep timestamps monotonic."""
    o.lr.pending = <void *>target
    o.lr.codec = target.codec
    o.lr.hint_valid = hint32 is not None
    o.lr.hint32 = <uint32_t>(int(hint32) & 0xFFFFFFFF) if hint32 is not None else 0


def cancel_switch(OutTrack o):
    o.lr.pending = NULL
    o.lr.hint_valid = False


def source_state(OutTrack o):
    """Where `o` stands: dict of switch counters, pending flag and padding sent."""
    return {
        "switches": o.lr.switches,
        "pending": o.lr.pending != NULL,
        "switch_waits": o.lr.switch_waits,
        "ts_from_hint": o.lr.ts_from_hint,
        "ts_from_arrival": o.lr.ts_from_arrival,
        "pad_packets": o.lr.pad_packets,
        "pad_bytes": o.lr.pad_bytes,
        "pad_budget": o.lr.pad_budget,
    }


def is_current_source(OutTrack o, InStream st) -> bool:
    return o.lr.current == <void *>st


def add_padding(OutTrack o, long long budget_bytes, bint reset=False):
    """Allow `budget_bytes` more padding after the next frame ends (a bandwidth probe)."""
    if reset:
        o.lr.pad_budget = 0
    o.lr.pad_budget += budget_bytes
    if o.lr.pad_budget > 1000000:
        o.lr.pad_budget = 1000000


def sent_packets(Endpoint ep, unsigned long long first, int count):
    """Send records for extended transport-wide sequence numbers first..first+count-1:
    a list of (send_time_us, size, flags), None where the ring no longer holds it."""
    cdef list out = []
    cdef uint64_t s
    cdef SendRecord *r
    for s in range(first, first + count):
        r = sendlog_find(ep.sendlog, s)
        if r == NULL or s >= ep.twcc_next:
            out.append(None)
        else:
            out.append((r.sent_us, r.size, r.flags))
    return out
