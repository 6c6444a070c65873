# Included by _fastpath.pyx (`include "_loadrx.pxi"`): the receive path of `sfu bench`'s viewers.
#
# A load-test process holds hundreds of WHEP viewers, each with its own UDP socket (a server tells
# viewers apart by address). Reading them from Python cost ~20 µs per packet and made the tool, not
# the server, the limit of every large run. `LoadReceiver` reads all of a process's viewer sockets
# from one epoll set and does the per-packet work here: what the viewer needs to act like a browser
# (sequence and gap bookkeeping, transport-wide arrival times, jitter) and what the bench measures
# (packet counts, the latency probe of one packet in K, a histogram). It knows only RTP/SRTP wire
# formats and the bench publisher's probe, nothing of any server.
#
# Driven by: `drain()` when the epoll descriptor is readable (the asyncio shell's add_reader);
# `process()` for a datagram Python hands back (one that arrived before its SSRC was bound).
# Python decides: it registers sockets (`add`/`remove`), enables the fast path once SRTP keys exist
# (`set_media`), binds each SSRC it has seen (`bind`), and takes gap/late events, transport-cc
# arrivals, stream counters and the histogram when it needs them. Everything else a datagram can be
# (STUN, DTLS, SRTCP, RTP of an unbound SSRC) goes back to Python unchanged, with its address and
# kernel arrival time.

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int EPOLLIN
    int EPOLL_CTL_ADD
    int EPOLL_CTL_DEL
    int EPOLL_CLOEXEC

from libc.errno cimport EAGAIN

cdef extern from "<unistd.h>" nogil:
    int _lrx_close "close"(int fd)

DEF LRX_STREAMS = 8           # SSRCs bound per viewer socket (media and RTX)
DEF LRX_RECV = 8              # datagrams read per ready socket per drain: one frame of the top layer
DEF LRX_EVENTS = 256          # ready sockets taken per epoll_wait
DEF LRX_DGRAM = 2048
DEF LRX_CTRL = 64             # control buffer per datagram (CMSG_SPACE(sizeof(timespec)) is 32)
DEF LRX_CTRL_WORDS = 64       # LRX_RECV * LRX_CTRL / 8
DEF LRX_PROBE_WINDOW = 96     # bytes after the RTP header where the publisher's probe is looked for
DEF LRX_PROBE_LEN = 17        # magic (4) + send time (8) + frame (4) + layer (1)
DEF LRX_REPLAY_SLACK_NS = 50000000
DEF LRX_HIST_DECADES = 8      # 1 ms .. 100 000 s at 3 significant digits
DEF LRX_HIST_SLOTS = 1000 + 900 * LRX_HIST_DECADES
DEF LRX_MAX_TWCC = 65536      # arrivals kept per socket between two feedbacks

LOAD_EVENT_GAP = 1    # (kind, slot, ssrc, highest, ext): ext arrived; highest+1 .. ext-1 missing
LOAD_EVENT_LATE = 2   # (kind, slot, ssrc, ext, 0): ext arrived below the highest number

cdef struct LrxStream:
    uint32_t ssrc
    int media                  # index of the stream this RTX SSRC repairs; -1: a media stream
    int clock
    int64_t base
    int64_t highest
    int64_t received
    int64_t bytes
    int64_t rtx                # retransmissions received for this (media) stream
    double jitter              # RFC 3550 A.8, in timestamp units
    int64_t last_transit
    bint has_transit
    int64_t newest_send_ns     # newest probe send time seen (older ones are cache replays)
    int64_t last_frame
    int64_t frames


cdef struct LrxSlot:
    int fd
    bint used
    bint media                 # SRTP keys set: RTP of bound SSRCs is handled here
    int twcc_id
    uint8_t rtx_pt[128]
    int nstreams
    LrxStream streams[LRX_STREAMS]
    int64_t twcc_highest
    int64_t *twcc              # (extended transport seq, arrival µs) pairs
    int twcc_n
    int twcc_cap
    int64_t twcc_reported      # highest transport-wide number already in a feedback (-1: none)
    int twcc_fb_count          # feedback packet count (mod 256)
    int64_t connected_ns
    int64_t first_rtp_ns
    int until_decrypt
    int64_t rtx_padding


cdef inline int lrx_hist_index(int64_t us) noexcept nogil:
    """`sfu.bench.hist.bucket`'s bucket as an array index: exact under 1 ms, 3 digits above."""
    cdef int decade = 0
    cdef int64_t scale = 1
    if us < 1000:
        return <int>us if us > 0 else 0
    while us // scale >= 1000:
        scale *= 10
        decade += 1
    if decade > LRX_HIST_DECADES:
        return LRX_HIST_SLOTS - 1
    return 1000 + (decade - 1) * 900 + <int>(us // scale) - 100


cdef inline int64_t lrx_hist_value(int index) noexcept nogil:
    cdef int64_t scale = 10
    cdef int decade
    if index < 1000:
        return index
    decade = (index - 1000) // 900
    for _ in range(decade):
        scale *= 10
    return (100 + (index - 1000) % 900) * scale


cdef class LoadReceiver:
    """Many viewer sockets, one epoll set, per-packet work in C (see the file comment).

    Slots are the registered sockets; a slot's number is what `drain` reports datagrams and events
    under. Counters: `packets`, `bytes` (RTP datagrams), `decrypted`, `decrypt_failures`,
    `replayed` (probes older than their stream's newest: cache replays, kept out of the histogram),
    `recv_errors`, `twcc_overflow`, `wakeups`."""

    cdef int epfd
    cdef LrxSlot *slots
    cdef int nslots
    cdef int free_hint
    cdef list _rx                        # slot -> SrtpContext (or None)
    cdef list events
    cdef int64_t hist[LRX_HIST_SLOTS]
    cdef uint8_t *rbuf
    cdef mmsghdr rmsgs[LRX_RECV]
    cdef iovec riov[LRX_RECV]
    cdef sockaddr_storage raddrs[LRX_RECV]
    cdef uint64_t rctrl[LRX_CTRL_WORDS]   # 8-byte aligned for cmsghdr
    cdef epoll_event ready[LRX_EVENTS]
    cdef readonly int decrypt_every
    cdef readonly unsigned long long packets
    cdef readonly unsigned long long bytes
    cdef readonly unsigned long long decrypted
    cdef readonly unsigned long long decrypt_failures
    cdef readonly unsigned long long replayed
    cdef readonly unsigned long long recv_errors
    cdef readonly unsigned long long twcc_overflow   # arrivals not kept: LRX_MAX_TWCC between feedbacks
    cdef readonly unsigned long long wakeups

    def __cinit__(self, *args, **kwargs):
        self.epfd = -1
        self.rbuf = <uint8_t *>malloc(LRX_RECV * LRX_DGRAM)
        if self.rbuf == NULL:
            raise MemoryError()
        memset(self.hist, 0, sizeof(self.hist))

    def __init__(self, int decrypt_every=1):
        cdef int i
        self.decrypt_every = decrypt_every if decrypt_every > 0 else 1
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1 failed")
        self._rx = []
        self.events = []
        for i in range(LRX_RECV):
            self.riov[i].iov_base = self.rbuf + i * LRX_DGRAM
            self.riov[i].iov_len = LRX_DGRAM
            self.rmsgs[i].msg_hdr.msg_name = &self.raddrs[i]
            self.rmsgs[i].msg_hdr.msg_iov = &self.riov[i]
            self.rmsgs[i].msg_hdr.msg_iovlen = 1

    def __dealloc__(self):
        cdef int i
        if self.slots != NULL:
            for i in range(self.nslots):
                free(self.slots[i].twcc)
            free(self.slots)
        free(self.rbuf)
        if self.epfd >= 0:
            _lrx_close(self.epfd)

    def fileno(self) -> int:
        return self.epfd

    # -- registration (Python decides) ----------------------------------------------------------

    def add(self, int fd) -> int:
        """Register a non-blocking UDP socket (SO_TIMESTAMPNS on, for kernel arrival times)."""
        cdef int slot = -1, i
        cdef LrxSlot *grown
        cdef epoll_event ev
        for i in range(self.free_hint, self.nslots):
            if not self.slots[i].used:
                slot = i
                break
        if slot < 0:
            grown = <LrxSlot *>realloc(self.slots, (self.nslots * 2 + 16) * sizeof(LrxSlot))
            if grown == NULL:
                raise MemoryError()
            self.slots = grown
            memset(self.slots + self.nslots, 0, (self.nslots + 16) * sizeof(LrxSlot))
            slot = self.nslots
            self.nslots = self.nslots * 2 + 16
            while len(self._rx) < self.nslots:
                self._rx.append(None)
        ev.events = EPOLLIN
        ev.data.u64 = 0
        ev.data.u32 = <uint32_t>slot
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            raise OSError(errno, "epoll_ctl(ADD) failed")
        free(self.slots[slot].twcc)
        memset(&self.slots[slot], 0, sizeof(LrxSlot))
        self.slots[slot].fd = fd
        self.slots[slot].used = True
        self.slots[slot].twcc_highest = -1
        self.slots[slot].twcc_reported = -1
        self.free_hint = slot + 1
        return slot

    def remove(self, int slot):
        """Unregister (before the socket is closed); the slot's state is dropped."""
        cdef LrxSlot *s = self._slot(slot)
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, s.fd, NULL)
        s.used = False
        s.media = False
        free(s.twcc)
        s.twcc = NULL
        s.twcc_n = s.twcc_cap = 0
        self._rx[slot] = None
        if slot < self.free_hint:
            self.free_hint = slot

    cdef LrxSlot *_slot(self, int slot) except NULL:
        if slot < 0 or slot >= self.nslots or not self.slots[slot].used:
            raise ValueError(f"no socket registered as slot {slot}")
        return &self.slots[slot]

    def set_media(self, int slot, SrtpContext rx, int twcc_id, rtx_payload_types, long long connected_ns):
        """SRTP is up: RTP of this slot's bound SSRCs is handled here from now on."""
        cdef LrxSlot *s = self._slot(slot)
        cdef int pt
        memset(s.rtx_pt, 0, sizeof(s.rtx_pt))
        for pt in rtx_payload_types:
            if 0 <= pt < 128:
                s.rtx_pt[pt] = 1
        s.twcc_id = twcc_id
        s.connected_ns = connected_ns
        for pt in range(s.nstreams):
            if s.streams[pt].newest_send_ns < connected_ns:
                s.streams[pt].newest_send_ns = connected_ns
        self._rx[slot] = rx
        s.media = True

    def bind(self, int slot, uint32_t ssrc, int clock, long long base, long long highest,
             long long received=0, long long nbytes=0, media_ssrc=None):
        """Bind an SSRC (its state so far, from Python's first packets); `media_ssrc`: this is an
        RTX SSRC whose packets repair that (bound) media SSRC. Rebinding updates the counters."""
        cdef LrxSlot *s = self._slot(slot)
        cdef int i, target = -1
        cdef LrxStream *st
        if media_ssrc is not None:
            for i in range(s.nstreams):
                if s.streams[i].ssrc == <uint32_t>media_ssrc and s.streams[i].media < 0:
                    target = i
            if target < 0:
                raise ValueError(f"media SSRC {media_ssrc} is not bound")
        for i in range(s.nstreams):
            if s.streams[i].ssrc == ssrc:
                st = &s.streams[i]
                break
        else:
            if s.nstreams >= LRX_STREAMS:
                return False
            st = &s.streams[s.nstreams]
            memset(st, 0, sizeof(LrxStream))
            st.ssrc = ssrc
            st.last_frame = -1
            st.newest_send_ns = s.connected_ns
            s.nstreams += 1
        st.media = target
        st.clock = clock if clock > 0 else 90000
        st.base = base
        st.highest = highest
        st.received = received
        st.bytes = nbytes
        return True

    def is_bound(self, int slot, uint32_t ssrc) -> bool:
        cdef LrxSlot *s = self._slot(slot)
        cdef int i
        for i in range(s.nstreams):
            if s.streams[i].ssrc == ssrc:
                return True
        return False

    def streams(self, int slot) -> list:
        """Media streams' state: (ssrc, base, highest, received, bytes, jitter, rtx, frames)."""
        cdef LrxSlot *s = self._slot(slot)
        cdef int i
        cdef LrxStream *st
        out = []
        for i in range(s.nstreams):
            st = &s.streams[i]
            if st.media < 0:
                out.append((st.ssrc, st.base, st.highest, st.received, st.bytes, st.jitter, st.rtx,
                            st.frames))
        return out

    def first_rtp_ns(self, int slot) -> int:
        """CLOCK_MONOTONIC arrival of the slot's first RTP datagram (0: none yet)."""
        return self._slot(slot).first_rtp_ns

    def rtx_padding(self, int slot) -> int:
        return self._slot(slot).rtx_padding

    def add_twcc(self, int slot, uint16_t seq, long long arrival_us):
        """An arrival Python saw (a packet that took its path): kept with the others, in order."""
        if lrx_twcc_add(self._slot(slot), seq, arrival_us) < 0:
            self.twcc_overflow += 1

    def twcc_feedback(self, int slot, uint32_t sender_ssrc, uint32_t media_ssrc, int max_size=1200) -> list:
        """Transport-cc feedback (plain RTCP, one bytes per packet) for the arrivals since the last
        call, then forgets them: what `sfu.wire.twcc_feedback.FeedbackBuilder.build` and
        `rtcp.serialize` make of the same records, byte for byte (each number above the last one
        reported once, at its first arrival; gaps reported lost; a new packet when one would pass
        `max_size` bytes or a delta does not fit 16 bits)."""
        cdef LrxSlot *s = self._slot(slot)
        cdef int64_t *a = s.twcc
        cdef int n = s.twcc_n, m = 0, i, j
        cdef int64_t seq, arr, last
        s.twcc_n = 0
        if n == 0:
            return []
        for i in range(1, n):   # insertion sort by (seq, arrival): almost always in order already
            seq = a[2 * i]
            arr = a[2 * i + 1]
            j = i - 1
            while j >= 0 and (a[2 * j] > seq or (a[2 * j] == seq and a[2 * j + 1] > arr)):
                a[2 * j + 2] = a[2 * j]
                a[2 * j + 3] = a[2 * j + 1]
                j -= 1
            a[2 * j + 2] = seq
            a[2 * j + 3] = arr
        last = s.twcc_reported
        for i in range(n):      # above the last reported, once each (the earliest arrival)
            if a[2 * i] > last:
                last = a[2 * i]
                a[2 * m] = a[2 * i]
                a[2 * m + 1] = a[2 * i + 1]
                m += 1
        if m == 0:
            return []
        out = lrx_twcc_build(a, m, sender_ssrc, media_ssrc, &s.twcc_fb_count, max_size)
        s.twcc_reported = a[2 * (m - 1)]
        return out

    def take_events(self) -> list:
        out, self.events = self.events, []
        return out

    def take_hist(self) -> dict:
        """{bucket µs: count} since the last call (`sfu.bench.hist` buckets)."""
        cdef int i
        out = {}
        for i in range(LRX_HIST_SLOTS):
            if self.hist[i]:
                out[lrx_hist_value(i)] = self.hist[i]
                self.hist[i] = 0
        return out

    # -- receive ---------------------------------------------------------------------------------

    def drain(self, int budget=4096) -> list:
        """Read every ready socket (up to LRX_RECV datagrams each, `budget` in all); handle RTP of
        bound SSRCs here; return the rest as (slot, data, addr, arrival_ns) for Python. The epoll
        set is level-triggered: sockets with more queued come back at the next call."""
        cdef list slow = None
        cdef int nready, r, got, i, n, slot, total = 0
        cdef timespec mono, real
        cdef int64_t arrival_ns, mono_ns, offset_ns, received
        cdef uint8_t *p
        cdef LrxSlot *s
        self.wakeups += 1
        clock_gettime(CLOCK_MONOTONIC, &mono)
        clock_gettime(CLOCK_REALTIME, &real)
        mono_ns = <int64_t>mono.tv_sec * 1000000000 + mono.tv_nsec
        offset_ns = <int64_t>real.tv_sec * 1000000000 + real.tv_nsec - mono_ns  # kernel times are REALTIME
        nready = epoll_wait(self.epfd, self.ready, LRX_EVENTS, 0)
        for r in range(nready):
            slot = <int>self.ready[r].data.u32
            if slot >= self.nslots or not self.slots[slot].used:
                continue
            s = &self.slots[slot]
            for i in range(LRX_RECV):
                self.rmsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
                self.rmsgs[i].msg_hdr.msg_control = <uint8_t *>self.rctrl + i * LRX_CTRL
                self.rmsgs[i].msg_hdr.msg_controllen = LRX_CTRL
                self.rmsgs[i].msg_hdr.msg_flags = 0
            got = recvmmsg(s.fd, self.rmsgs, LRX_RECV, MSG_DONTWAIT, NULL)
            if got < 0:
                if errno != EAGAIN and errno != EINTR:
                    self.recv_errors += 1
                continue
            for i in range(got):
                p = self.rbuf + i * LRX_DGRAM
                n = self.rmsgs[i].msg_len
                received = kernel_rx_time_ns(&self.rmsgs[i].msg_hdr)
                arrival_ns = received - offset_ns if received >= 0 else mono_ns
                if n >= 12 and 128 <= p[0] <= 191 and not (192 <= p[1] <= 223):
                    self.packets += 1
                    self.bytes += n
                    if s.first_rtp_ns == 0:
                        s.first_rtp_ns = arrival_ns
                    if s.media and self._rtp(slot, s, p, n, arrival_ns):
                        continue
                if slow is None:
                    slow = []
                slow.append((slot, PyBytes_FromStringAndSize(<char *>p, n),
                             addr_to_tuple(&self.raddrs[i], self.raddrs[i].ss_family), arrival_ns))
            total += got
            if total >= budget:
                break
        return slow

    def process(self, int slot, bytes data, long long arrival_ns) -> bool:
        """Handle one RTP datagram Python holds (its SSRC was bound meanwhile); False: not ours."""
        cdef LrxSlot *s = self._slot(slot)
        cdef int n = PyBytes_GET_SIZE(data)
        cdef uint8_t buf[LRX_DGRAM]
        if not s.media or n > LRX_DGRAM or n < 12:
            return False
        memcpy(buf, PyBytes_AS_STRING(data), n)
        return bool(self._rtp(slot, s, buf, n, arrival_ns))

    cdef int _rtp(self, int slot, LrxSlot *s, uint8_t *p, int n, int64_t arrival_ns) except -1:
        """One SRTP packet of a slot with keys: 1 handled here, 0 for Python (unbound SSRC)."""
        cdef RtpView v
        cdef int i, idx = -1, off, elen, m, pos, end
        cdef LrxStream *st
        cdef LrxStream *t
        cdef int64_t highest, ext, transit, d, send_ns, us, newest
        cdef uint16_t seq
        cdef uint32_t frame
        cdef unsigned long long index = 0
        cdef bint is_rtx
        cdef SrtpContext rx
        if parse_rtp(p, n, &v) < 0:
            return 0
        for i in range(s.nstreams):
            if s.streams[i].ssrc == v.ssrc:
                idx = i
                break
        if idx < 0:
            return 0
        st = &s.streams[idx]
        is_rtx = s.rtx_pt[v.pt] != 0
        if is_rtx != (st.media >= 0):
            return 0   # an RTX payload type on a media SSRC (or the reverse): Python's full path
        if s.twcc_id:
            off = find_extension(p, &v, s.twcc_id, &elen)
            if off >= 0 and elen == 2:
                if lrx_twcc_add(s, rd16(p + off), arrival_ns // 1000) < 0:
                    self.twcc_overflow += 1
        rx = <SrtpContext>self._rx[slot]
        seq = v.seq
        t = st
        if is_rtx:
            # RFC 4588 §4: the payload starts with the original sequence number (encrypted).
            m = rx.unprotect_rtp(p, n, &index)
            if m < 0 or parse_rtp(p, m, &v) < 0:
                self.decrypt_failures += 1
                return 1
            if v.payload_len < 2:
                s.rtx_padding += 1   # padding-only: a bandwidth probe
                return 1
            seq = rd16(p + v.payload_off)
            t = &s.streams[st.media]
            t.rtx += 1
        highest = t.highest
        ext = unwrap16(<uint64_t>highest, seq)
        t.received += 1
        t.bytes += n
        if ext <= highest:
            self.events.append((LOAD_EVENT_LATE, slot, t.ssrc, ext, 0))
            return 1
        if ext > highest + 1:
            self.events.append((LOAD_EVENT_GAP, slot, t.ssrc, highest, ext))
        t.highest = ext
        if is_rtx:
            return 1
        # RFC 3550 A.8 interarrival jitter, from in-order packets
        transit = (arrival_ns // 1000000000) * t.clock + (arrival_ns % 1000000000) * t.clock // 1000000000 - v.ts
        if t.has_transit:
            d = transit - t.last_transit
            t.jitter += ((d if d >= 0 else -d) - t.jitter) / 16.0
        t.last_transit = transit
        t.has_transit = True
        s.until_decrypt -= 1
        if s.until_decrypt > 0:
            return 1
        s.until_decrypt = self.decrypt_every
        m = rx.unprotect_rtp(p, n, &index)
        if m < 0:
            self.decrypt_failures += 1
            return 1
        self.decrypted += 1
        pos = v.payload_off
        end = v.payload_off + LRX_PROBE_WINDOW
        if end > m - LRX_PROBE_LEN + 4:
            end = m - LRX_PROBE_LEN + 4
        while pos + 4 <= end:
            if p[pos] == 0xA5 and p[pos + 1] == 0x5A and p[pos + 2] == 0x5F and p[pos + 3] == 0x54:
                break
            pos += 1
        else:
            return 1
        send_ns = <int64_t>((<uint64_t>rd32(p + pos + 4) << 32) | rd32(p + pos + 8))
        frame = rd32(p + pos + 12)
        newest = t.newest_send_ns
        if send_ns < newest - LRX_REPLAY_SLACK_NS or send_ns < s.connected_ns:
            self.replayed += 1
            return 1
        if send_ns > newest:
            t.newest_send_ns = send_ns
        us = (arrival_ns - send_ns) // 1000
        self.hist[lrx_hist_index(us)] += 1
        if <int64_t>frame != t.last_frame:
            t.last_frame = frame
            t.frames += 1
        return 1


cdef inline int lrx_twcc_add(LrxSlot *s, uint16_t seq, int64_t arrival_us) noexcept:
    """Keep one transport-wide arrival (sequence number extended); 0, or -1 when not kept."""
    cdef int64_t ext = seq if s.twcc_highest < 0 else unwrap16(<uint64_t>s.twcc_highest, seq)
    cdef int64_t *grown
    cdef int cap
    if ext > s.twcc_highest:
        s.twcc_highest = ext
    if s.twcc_n >= s.twcc_cap:
        if s.twcc_cap >= LRX_MAX_TWCC:
            return -1
        cap = s.twcc_cap * 2 if s.twcc_cap else 256
        grown = <int64_t *>realloc(s.twcc, cap * 2 * sizeof(int64_t))
        if grown == NULL:
            return -1
        s.twcc = grown
        s.twcc_cap = cap
    s.twcc[2 * s.twcc_n] = ext
    s.twcc[2 * s.twcc_n + 1] = arrival_us
    s.twcc_n += 1
    return 0


def load_hist_bucket(long long us) -> int:
    """The histogram bucket `LoadReceiver` counts a latency of `us` µs in (tests: it must be
    `sfu.bench.hist.bucket`'s)."""
    return lrx_hist_value(lrx_hist_index(us))


# -- transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1) ---------------
# The same packets as `sfu.wire.rtcp.build_transport_cc` + `serialize` (tested byte for byte): the
# load tool sends a browser's feedback rate (every 100 ms per viewer), and in Python that was ~80 µs
# per feedback, the largest cost of a 1,000-viewer run.

DEF TWCC_DELTA_TICK_US = 250
DEF TWCC_REFERENCE_TICKS = 256     # 64 ms reference unit in 250 µs ticks
DEF TWCC_SIZE_SLACK = 16


cdef class _TwccStatuses:
    """One feedback packet's statuses while it is built: symbol (0 lost, 1 small, 2 large delta)
    and delta in 250 µs ticks."""
    cdef uint8_t *sym
    cdef int32_t *delta
    cdef int n
    cdef int cap

    def __dealloc__(self):
        free(self.sym)
        free(self.delta)

    cdef int push(self, uint8_t sym, int32_t delta) except -1:
        cdef int cap
        if self.n >= self.cap:
            cap = self.cap * 2 if self.cap else 64
            self.sym = <uint8_t *>realloc(self.sym, cap)
            self.delta = <int32_t *>realloc(self.delta, cap * sizeof(int32_t))
            if self.sym == NULL or self.delta == NULL:
                raise MemoryError()
            self.cap = cap
        self.sym[self.n] = sym
        self.delta[self.n] = delta
        self.n += 1
        return 0


cdef bytes lrx_twcc_serialize(_TwccStatuses st, uint32_t sender_ssrc, uint32_t media_ssrc,
                              uint16_t base_seq, uint32_t reference, uint8_t fb_count):
    cdef int n = st.n, i = 0, k, run, w, pad, body, total, pos, ndelta = 0
    cdef bint large
    cdef uint16_t word
    cdef uint8_t *buf
    for k in range(n):
        ndelta += 1 if st.sym[k] == 1 else (2 if st.sym[k] == 2 else 0)
    buf = <uint8_t *>malloc(24 + 2 * n + ndelta + 4)
    if buf == NULL:
        raise MemoryError()
    pos = 20   # after the header (4) and the fixed feedback fields (16)
    while i < n:   # greedy chunks, as rtcp._twcc_chunks
        run = 1
        while i + run < n and st.sym[i + run] == st.sym[i] and run < 0x1FFF:
            run += 1
        w = n - i if n - i < 14 else 14
        large = False
        for k in range(w):
            if st.sym[i + k] == 2:
                large = True
        if run >= 14 or i + run == n:
            word = (st.sym[i] << 13) | run
            i += run
        elif not large:
            word = 0x8000
            for k in range(w):
                word |= st.sym[i + k] << (13 - k)
            i += w
        elif run >= 7:
            word = (st.sym[i] << 13) | run
            i += run
        else:
            word = 0xC000
            for k in range(7 if n - i >= 7 else n - i):
                word |= st.sym[i + k] << (12 - 2 * k)
            i += 7
        wr16(buf + pos, word)
        pos += 2
    for k in range(n):
        if st.sym[k] == 1:
            buf[pos] = <uint8_t>st.delta[k]
            pos += 1
        elif st.sym[k] == 2:
            wr16(buf + pos, <uint16_t>(<int16_t>st.delta[k]))
            pos += 2
    body = pos - 4
    pad = (-body) & 3
    if pad:   # RTCP padding, the count in the last octet (as libwebrtc)
        memset(buf + pos, 0, pad)
        buf[pos + pad - 1] = pad
        pos += pad
        body += pad
    buf[0] = 0x80 | (0x20 if pad else 0) | 15
    buf[1] = 205
    wr16(buf + 2, <uint16_t>(body // 4))
    wr32(buf + 4, sender_ssrc)
    wr32(buf + 8, media_ssrc)
    wr16(buf + 12, base_seq)
    wr16(buf + 14, <uint16_t>n)
    wr32(buf + 16, ((reference & 0xFFFFFF) << 8) | fb_count)
    try:
        return PyBytes_FromStringAndSize(<char *>buf, pos)
    finally:
        free(buf)


cdef list lrx_twcc_build(const int64_t *a, int m, uint32_t sender_ssrc, uint32_t media_ssrc,
                         int *fb_count, int max_size):
    """`rtcp.build_transport_cc` over `m` (seq, arrival µs) pairs, increasing and unique."""
    cdef list out = []
    cdef _TwccStatuses st = None
    cdef int i
    cdef int64_t seq, ticks, delta, reference = 0, size4 = 0, cost4, lost
    cdef int64_t prev_ticks = 0
    cdef uint16_t base_seq = 0
    cdef uint8_t count = 0
    cdef int64_t limit4 = (<int64_t>max_size - TWCC_SIZE_SLACK) * 4
    for i in range(m):
        seq = a[2 * i]
        if st is not None:   # the numbers between: lost (2 bits each, never opening a packet)
            lost = a[2 * i - 2] + 1
            while lost < seq and st.n < 0xFFFF:
                st.push(0, 0)
                size4 += 1
                lost += 1
        ticks = a[2 * i + 1] // TWCC_DELTA_TICK_US
        if st is not None:
            delta = ticks - prev_ticks
            cost4 = 1 + (4 if 0 <= delta <= 0xFF else 8)
            if -0x8000 <= delta <= 0x7FFF and size4 + cost4 <= limit4 and st.n < 0xFFFF:
                st.push(1 if 0 <= delta <= 0xFF else 2, <int32_t>delta)
                size4 += cost4
                prev_ticks = ticks
                continue
            out.append(lrx_twcc_serialize(st, sender_ssrc, media_ssrc, base_seq, <uint32_t>reference, count))
        reference = (a[2 * i + 1] // (TWCC_DELTA_TICK_US * TWCC_REFERENCE_TICKS)) & 0xFFFFFF
        st = _TwccStatuses()
        st.push(1, <int32_t>(ticks - (a[2 * i + 1] // (TWCC_DELTA_TICK_US * TWCC_REFERENCE_TICKS)) * TWCC_REFERENCE_TICKS))
        base_seq = <uint16_t>(seq & 0xFFFF)
        count = <uint8_t>(fb_count[0] & 0xFF)
        fb_count[0] = (fb_count[0] + 1) & 0xFF
        size4 = 85   # 20 bytes + 2 bits + 1 byte, in quarter bytes
        prev_ticks = ticks
    if st is not None:
        out.append(lrx_twcc_serialize(st, sender_ssrc, media_ssrc, base_seq, <uint32_t>reference, count))
    return out
