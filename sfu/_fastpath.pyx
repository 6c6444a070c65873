# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The per-packet work of sfu: receive, demultiplex, SRTP, RTP rewrite, fan-out, batched send.

Rule (DESIGN.md "The fast path"): whatever runs for each packet and each subscriber lives here, as
C-level code with no Python call and no Python object per packet; every decision (a few times a
second per stream) stays in Python, which configures the objects below and polls their counters.

What drives it:
- `Router.on_readable(now)`: the asyncio shell calls it when the shared UDP socket is readable. It
  drains the socket with `recvmmsg`, classifies each datagram (RFC 7983 first byte), and for SRTP
  from a known address unprotects, sniffs keyframes and fans the packet out to every subscribed
  `OutTrack` (rewrite SSRC / payload type / sequence number / timestamp / header-extension ids,
  stamp the transport-wide sequence number, protect), queueing datagrams for one `sendmmsg`.
  Everything else (STUN, DTLS, SRTCP, RTP with an SSRC nobody bound yet) is returned to Python as
  a short list of `(kind, endpoint_or_None, data, addr, local)` tuples (`local`: the index of the
  local address it arrived on, see `read_local`): rare traffic, cheap to hand over.
- `Router.inject(stream, packet, now)`: Python re-feeds a plaintext RTP packet (the first packet
  of an SSRC it has just bound) into the same fan-out.
- Python changes state only when it decides something: binding SSRCs, attaching subscriptions,
  setting keys and paths, requesting a re-base at the next keyframe.

Drops are counted by reason in `Router.drops` / per object counters; Python exports them.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.ref cimport PyObject
from libc.errno cimport EINTR, EINVAL, EIO, ENETUNREACH, ENOPROTOOPT, errno
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove, memset
from os import strerror as os_strerror

include "_srtp.pxi"

# ---------------------------------------------------------------------------------------------
# libc sockets
# ---------------------------------------------------------------------------------------------

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct iovec:
        void *iov_base
        size_t iov_len
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    cmsghdr *CMSG_FIRSTHDR(msghdr *msgh)
    cmsghdr *CMSG_NXTHDR(msghdr *msgh, cmsghdr *cmsg)
    size_t CMSG_SPACE(size_t length)
    size_t CMSG_LEN(size_t length)
    int recvmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout)
    int sendmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags)
    ssize_t sendmsg(int sockfd, const msghdr *msg, int flags)
    int AF_INET
    int AF_INET6
    int MSG_DONTWAIT

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    int CLOCK_MONOTONIC
    int CLOCK_REALTIME

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr
    struct in6_addr:
        unsigned char s6_addr[16]
    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    int inet_pton(int af, const char *src, void *dst)

# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------

DEF BATCH = 64                 # datagrams per recvmmsg call
DEF SEND_BATCH = 256           # outgoing datagrams queued before a sendmmsg
DEF GSO_MAX_SEGMENTS = 64      # UDP_MAX_SEGMENTS of older kernels
DEF GSO_MAX_BYTES = 60000      # one GSO send stays below the 64 KiB UDP datagram limit
DEF SEND_CTRL = 64             # control buffer per sent message: UDP_SEGMENT (CMSG_SPACE(2) = 24)
                               # + IPV6_PKTINFO (CMSG_SPACE(20) = 40) or IP_PKTINFO (CMSG_SPACE(12) = 32)
DEF PKTINFO_CTRL = 40          # control buffer per plain (non-GSO) message: the source address only
DEF GSO_MAX_REFUSALS = 64      # refused GSO sends (each peer's path once) before GSO is off for all
DEF SOL_UDP_ = 17
DEF UDP_SEGMENT_ = 103         # linux/udp.h: segment size for a GSO send (Linux >= 4.18)
DEF MAX_DGRAM = 1500           # receive buffer per datagram (larger datagrams are truncated: dropped)
DEF OUT_CAPACITY = 1536        # per outgoing datagram buffer (room for SRTP tag and added extensions)
DEF MAX_READ_PER_WAKEUP = 512  # fairness: return to the event loop after this many datagrams
DEF MAX_FORWARD_PER_WAKEUP = 4096  # ... or once this many were forwarded (~5-20 ms of work)
DEF MAX_SSRCS = 32             # incoming SSRCs bound per endpoint
DEF RCTRL_WORDS = 14           # control buffer per received datagram, in 8-byte words: a timestamp
                               # (32 bytes), IPV6_PKTINFO (40) and room for an IP_PKTINFO (32)
DEF SOL_SOCKET_ = 1
DEF SCM_TIMESTAMPNS_ = 35      # the kernel's receive time (SO_TIMESTAMPNS), CLOCK_REALTIME
DEF IPPROTO_IP_ = 0
DEF IP_PKTINFO_ = 8            # linux/in.h: in_pktinfo, the local address a datagram arrived on / leaves from
DEF IPPROTO_IPV6_ = 41
DEF IPV6_PKTINFO_ = 50         # linux/in6.h: in6_pktinfo, the same for IPv6 (and IPv4-mapped) datagrams
DEF MAX_LOCALS = 32            # distinct local addresses remembered (index 0: unknown, the kernel picks)
DEF ADDR_TABLE_MIN = 1024
DEF SEQ_BASE = 4294967296          # 2**32: extended numbers start here so offsets never go negative
DEF TS_BASE = 1099511627776         # 2**40
DEF INDEX_MASK = 281474976710655    # 2**48 - 1: SRTP packet index

# Payload kinds sniffed for keyframes.
cdef enum:
    C_AUDIO = 0
    C_VP8 = 1
    C_VP9 = 2
    C_H264 = 3
    C_AV1 = 4

CODEC_AUDIO = C_AUDIO
CODEC_VP8 = C_VP8
CODEC_VP9 = C_VP9
CODEC_H264 = C_H264
CODEC_AV1 = C_AV1

# Datagram kinds handed to Python.
KIND_STUN = "stun"
KIND_DTLS = "dtls"
KIND_RTCP = "rtcp"
KIND_RTP_UNBOUND = "rtp-unbound"

# Drop reasons (index into the Router's counter array). Keep in sync with DROP_REASONS.
DEF D_UNKNOWN_ADDRESS = 0
DEF D_NOT_READY = 1
DEF D_SRTP_AUTH = 2
DEF D_SRTP_REPLAY = 3
DEF D_SRTP_OTHER = 4
DEF D_MALFORMED_RTP = 5
DEF D_UNKNOWN_FIRST_BYTE = 6
DEF D_TRUNCATED = 7
DEF D_PADDING_ONLY = 8
DEF D_SRTCP_AUTH = 9
DEF D_SRTCP_OTHER = 10
DEF D_SEND_FAILED = 11
DEF D_RTX_MALFORMED = 12
DEF N_DROPS = 13

DROP_REASONS = (
    "unknown-address", "not-ready", "srtp-auth", "srtp-replay", "srtp-other", "malformed-rtp",
    "unknown-first-byte", "truncated", "padding-only", "srtcp-auth", "srtcp-other", "send-failed",
    "rtx-malformed",
)

# OutTrack drop reasons (per subscription).
DEF O_WAIT_KEYFRAME = 0
DEF O_PAUSED = 1
DEF O_BEFORE_START = 2
DEF O_NO_PATH = 3
DEF O_PROTECT_FAILED = 4
DEF O_TOO_LARGE = 5
DEF N_ODROPS = 6

OUT_DROP_REASONS = ("waiting-keyframe", "paused", "before-start", "no-path", "protect-failed", "too-large")

TWCC_RING = 4096               # transport-wide arrival records kept per endpoint (power of two)

# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

cdef inline uint16_t rd16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]

cdef inline uint32_t rd32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline void wr16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF

cdef inline void wr32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF

cdef inline int64_t unwrap16(uint64_t highest, uint16_t value) noexcept nogil:
    """Extend a 16-bit sequence number against the highest extended one seen (RFC 3550 A.1)."""
    cdef int16_t diff = <int16_t>(value - <uint16_t>highest)
    return <int64_t>highest + diff

cdef inline int64_t unwrap32(uint64_t highest, uint32_t value) noexcept nogil:
    cdef int32_t diff = <int32_t>(value - <uint32_t>highest)
    return <int64_t>highest + diff

cdef inline int64_t kernel_rx_time_ns(msghdr *h) noexcept nogil:
    """The kernel's receive time of a datagram read with SO_TIMESTAMPNS on (CLOCK_REALTIME ns), or
    -1 when it carries none. The kernel puts it first, before any IP_PKTINFO / IPV6_PKTINFO."""
    cdef cmsghdr *cm
    if h.msg_controllen < sizeof(cmsghdr):
        return -1
    cm = CMSG_FIRSTHDR(h)
    while cm != NULL:
        if cm.cmsg_level == SOL_SOCKET_ and cm.cmsg_type == SCM_TIMESTAMPNS_:
            return (<int64_t *>CMSG_DATA(cm))[0] * 1000000000 + (<int64_t *>CMSG_DATA(cm))[1]
        cm = CMSG_NXTHDR(h, cm)
    return -1


# ---------------------------------------------------------------------------------------------
# Local addresses: a host with several addresses answers from the one each datagram arrived on
# ---------------------------------------------------------------------------------------------
#
# With the socket bound to a wildcard address, the kernel picks the source of what we send from the
# route to the peer, which on a host with several addresses (secondary IPs, loopback and Ethernet,
# several NICs) need not be the address the peer sent to; ICE then drops our answers (RFC 8445
# §7.2.5.2.1: a response must come from the address the request went to). So every received
# datagram's destination address (IP_PKTINFO / IPV6_PKTINFO, RFC 3542 §6) is noted as a small index
# into the Router's table of local addresses, and every datagram sent to a peer's path carries it
# back as its source (the same control messages on send).

cdef struct InPktinfo:          # struct in_pktinfo (linux/in.h)
    int ifindex
    uint32_t spec_dst           # the local address (for replies), network order
    uint32_t addr               # the header's destination address

cdef struct In6Pktinfo:         # struct in6_pktinfo (linux/ipv6.h)
    uint8_t addr[16]
    uint32_t ifindex

cdef struct LocalAddr:
    uint8_t ip[16]              # IPv4 as IPv4-mapped IPv6
    uint32_t ifindex            # kept for IPv6 link-local addresses only (their scope), else 0


cdef inline bint is_v4_mapped(const uint8_t *ip) noexcept nogil:
    cdef int i
    for i in range(10):
        if ip[i]:
            return False
    return ip[10] == 0xFF and ip[11] == 0xFF


cdef inline bint read_local(msghdr *h, LocalAddr *out) noexcept nogil:
    """The destination address of a received datagram, from its IP_PKTINFO / IPV6_PKTINFO control
    message (present when the socket has IP_PKTINFO / IPV6_RECVPKTINFO on); False when none."""
    cdef cmsghdr *cm
    cdef InPktinfo *p4
    cdef In6Pktinfo *p6
    if h.msg_controllen < sizeof(cmsghdr):
        return False
    cm = CMSG_FIRSTHDR(h)
    while cm != NULL:
        if cm.cmsg_level == IPPROTO_IPV6_ and cm.cmsg_type == IPV6_PKTINFO_:
            p6 = <In6Pktinfo *>CMSG_DATA(cm)
            memcpy(out.ip, p6.addr, 16)
            # fe80::/10 is meaningful only with its interface
            out.ifindex = p6.ifindex if (out.ip[0] == 0xFE and (out.ip[1] & 0xC0) == 0x80) else 0
            return True
        if cm.cmsg_level == IPPROTO_IP_ and cm.cmsg_type == IP_PKTINFO_:
            p4 = <InPktinfo *>CMSG_DATA(cm)
            memset(out.ip, 0, 10)
            out.ip[10] = 0xFF
            out.ip[11] = 0xFF
            memcpy(&out.ip[12], &p4.spec_dst, 4)
            out.ifindex = 0
            return True
        cm = CMSG_NXTHDR(h, cm)
    return False


cdef inline size_t write_pktinfo(uint8_t *buf, const LocalAddr *local, int family) noexcept nogil:
    """Write the control message that makes the kernel send from `local` (IP_PKTINFO on an IPv4
    socket, IPV6_PKTINFO on an IPv6 one, IPv4-mapped for IPv4 peers); returns the bytes used."""
    cdef cmsghdr *cm = <cmsghdr *>buf
    cdef InPktinfo *p4
    cdef In6Pktinfo *p6
    if family == AF_INET:
        cm.cmsg_len = CMSG_LEN(sizeof(InPktinfo))
        cm.cmsg_level = IPPROTO_IP_
        cm.cmsg_type = IP_PKTINFO_
        p4 = <InPktinfo *>CMSG_DATA(cm)
        p4.ifindex = 0          # the route decides the interface; only the source is fixed
        memcpy(&p4.spec_dst, &local.ip[12], 4)
        p4.addr = 0
        return CMSG_SPACE(sizeof(InPktinfo))
    cm.cmsg_len = CMSG_LEN(sizeof(In6Pktinfo))
    cm.cmsg_level = IPPROTO_IPV6_
    cm.cmsg_type = IPV6_PKTINFO_
    p6 = <In6Pktinfo *>CMSG_DATA(cm)
    memcpy(p6.addr, local.ip, 16)
    p6.ifindex = local.ifindex
    return CMSG_SPACE(sizeof(In6Pktinfo))


cdef struct RtpView:
    int header_len        # fixed header + CSRCs + extension block
    int payload_off
    int payload_len       # without padding
    int ext_off           # offset of the extension block's elements (0 if none)
    int ext_len           # bytes of extension elements
    uint16_t ext_profile  # 0xBEDE one-byte, 0x1000 two-byte
    uint8_t pt
    bint marker
    uint16_t seq
    uint32_t ts
    uint32_t ssrc


cdef struct FanItem:
    PyObject *st                             # the InStream (borrowed: no Python runs meanwhile)
    uint8_t *p                               # the plaintext packet in the receive buffer
    int n
    RtpView v
    int64_t ext_seq
    int64_t ext_ts
    int key

cdef inline int parse_rtp(const uint8_t *p, int n, RtpView *v) noexcept nogil:
    """RFC 3550 §5.1 header view. Returns 0 or -1 when malformed."""
    cdef int cc, off, ext_words, pad
    if n < 12 or (p[0] >> 6) != 2:
        return -1
    cc = p[0] & 0x0F
    off = 12 + 4 * cc
    if off > n:
        return -1
    v.ext_off = 0
    v.ext_len = 0
    v.ext_profile = 0
    if p[0] & 0x10:
        if off + 4 > n:
            return -1
        v.ext_profile = rd16(p + off)
        ext_words = rd16(p + off + 2)
        v.ext_off = off + 4
        v.ext_len = ext_words * 4
        off = off + 4 + ext_words * 4
        if off > n:
            return -1
    pad = 0
    if p[0] & 0x20:
        if n <= off:
            return -1
        pad = p[n - 1]
        if pad == 0 or off + pad > n:
            return -1
    v.header_len = off
    v.payload_off = off
    v.payload_len = n - off - pad
    v.pt = p[1] & 0x7F
    v.marker = (p[1] & 0x80) != 0
    v.seq = rd16(p + 2)
    v.ts = rd32(p + 4)
    v.ssrc = rd32(p + 8)
    return 0


cdef inline int find_extension(const uint8_t *p, RtpView *v, int ext_id, int *length) noexcept nogil:
    """RFC 8285 lookup: offset of extension `ext_id`'s data, or -1."""
    cdef int i = v.ext_off, end = v.ext_off + v.ext_len, eid, elen
    if ext_id <= 0 or v.ext_off == 0:
        return -1
    if v.ext_profile == 0xBEDE:
        while i < end:
            if p[i] == 0:
                i += 1
                continue
            eid = p[i] >> 4
            elen = (p[i] & 0x0F) + 1
            if eid == 15:
                return -1
            if i + 1 + elen > end:
                return -1
            if eid == ext_id:
                length[0] = elen
                return i + 1
            i += 1 + elen
    elif (v.ext_profile & 0xFFF0) == 0x1000:
        while i < end:
            if p[i] == 0:
                i += 1
                continue
            if i + 2 > end:
                return -1
            eid = p[i]
            elen = p[i + 1]
            if i + 2 + elen > end:
                return -1
            if eid == ext_id:
                length[0] = elen
                return i + 2
            i += 2 + elen
    return -1


cdef int sniff_keyframe(const uint8_t *p, int n, int codec) noexcept nogil:
    """1 if this payload starts a keyframe (the point a decoder can start from), else 0."""
    cdef int i, nal, size, off
    if n <= 0:
        return 0
    if codec == C_VP8:
        # RFC 7741 §4.2 payload descriptor, §4.3 payload header (P bit 0 = key frame).
        i = 1
        if p[0] & 0x80:
            if n < 2:
                return 0
            off = 2
            if p[1] & 0x80:
                if n <= off:
                    return 0
                off += 2 if (p[off] & 0x80) else 1
            if p[1] & 0x40:
                off += 1
            if p[1] & 0x30:
                off += 1
            i = off
        if not (p[0] & 0x10) or (p[0] & 0x07) != 0 or i >= n:
            return 0
        return 1 if (p[i] & 0x01) == 0 else 0
    if codec == C_H264:
        # RFC 6184: single NAL 1-23, STAP-A 24, FU-A 28. IDR = 5, SPS = 7.
        nal = p[0] & 0x1F
        if nal == 5 or nal == 7:
            return 1
        if nal == 24:
            i = 1
            while i + 2 < n:
                size = rd16(p + i)
                if size == 0 or i + 2 + size > n:
                    return 0
                nal = p[i + 2] & 0x1F
                if nal == 5 or nal == 7:
                    return 1
                i += 2 + size
            return 0
        if nal == 28 and n >= 2:
            return 1 if ((p[1] & 0x80) and (p[1] & 0x1F) == 5) else 0
        return 0
    if codec == C_VP9:
        # draft-ietf-payload-vp9 §4.2: I P L F B E V Z; key picture start = P 0, B 1, spatial id 0.
        if (p[0] & 0x40) or not (p[0] & 0x08):
            return 0
        if p[0] & 0x20:
            off = 1
            if p[0] & 0x80:
                if n < 2:
                    return 0
                off += 2 if (p[1] & 0x80) else 1
            if n <= off:
                return 0
            if ((p[off] >> 1) & 0x07) != 0:
                return 0
        return 1
    if codec == C_AV1:
        # AV1 RTP spec §4.4 aggregation header Z Y W W N: N = first packet of a coded video sequence.
        return 1 if (p[0] & 0x08) else 0
    return 0


include "_layers.pxi"   # simulcast switching, picture ids, send log, padding probes
include "_repair.pxi"   # NACK/RTX on both legs, keyframe cache, RED (after the constants it uses)
include "_resend.pxi"   # retransmissions to viewers: one store per layer, rewrite epochs per viewer
include "_twcc.pxi"     # transport-cc feedback from viewers: parsed, matched, summarised per compound
include "_estimator.pxi"  # per-viewer estimator windows (trendline, acked rate, delivery, loss) for bwe.py
include "_loadrx.pxi"    # sfu bench's viewer sockets: one epoll set, receive bookkeeping in C


# ---------------------------------------------------------------------------------------------
# Address keys: one C hash table maps a remote transport address to its Endpoint
# ---------------------------------------------------------------------------------------------

cdef struct AddrKey:
    uint8_t ip[16]      # IPv4 stored as IPv4-mapped IPv6
    uint16_t port
    uint8_t used        # 0 empty, 1 used, 2 deleted

cdef inline int sockaddr_key(const sockaddr_storage *sa, AddrKey *k) noexcept nogil:
    cdef const sockaddr_in *s4
    cdef const sockaddr_in6 *s6
    memset(k, 0, sizeof(AddrKey))
    if sa.ss_family == AF_INET:
        s4 = <const sockaddr_in *>sa
        k.ip[10] = 0xFF
        k.ip[11] = 0xFF
        memcpy(&k.ip[12], &s4.sin_addr, 4)
        k.port = ntohs(s4.sin_port)
        return 0
    if sa.ss_family == AF_INET6:
        s6 = <const sockaddr_in6 *>sa
        memcpy(k.ip, &s6.sin6_addr, 16)
        k.port = ntohs(s6.sin6_port)
        return 0
    return -1

cdef inline bint same_key(const AddrKey *a, const AddrKey *b) noexcept nogil:
    return a.port == b.port and memcmp(a.ip, b.ip, 16) == 0

cdef inline uint32_t key_hash(const AddrKey *k) noexcept nogil:
    cdef uint32_t h = 2166136261u
    cdef int i
    for i in range(16):
        h = (h ^ k.ip[i]) * 16777619u
    h = (h ^ (k.port & 0xFF)) * 16777619u
    h = (h ^ (k.port >> 8)) * 16777619u
    return h


cdef object addr_to_tuple(const sockaddr_storage *sa, int family):
    """Python (host, port) for the slow path: the form socket.sendto takes on our socket's family."""
    cdef char buf[64]
    cdef const sockaddr_in *s4
    cdef const sockaddr_in6 *s6
    if sa.ss_family == AF_INET:
        s4 = <const sockaddr_in *>sa
        inet_ntop(AF_INET, &s4.sin_addr, buf, 64)
        return (buf.decode("ascii"), ntohs(s4.sin_port))
    s6 = <const sockaddr_in6 *>sa
    inet_ntop(AF_INET6, &s6.sin6_addr, buf, 64)
    return (buf.decode("ascii"), ntohs(s6.sin6_port), 0, s6.sin6_scope_id)


cdef int tuple_to_sockaddr(object addr, int family, sockaddr_storage *out, socklen_t *outlen) except -1:
    """Fill a sockaddr of the socket's family from a (host, port[, ...]) tuple."""
    cdef bytes host = str(addr[0]).encode("ascii")
    cdef int port = int(addr[1])
    cdef sockaddr_in *s4
    cdef sockaddr_in6 *s6
    cdef uint8_t v4[4]
    memset(out, 0, sizeof(sockaddr_storage))
    if family == AF_INET:
        s4 = <sockaddr_in *>out
        s4.sin_family = AF_INET
        s4.sin_port = htons(port)
        if inet_pton(AF_INET, host, &s4.sin_addr) != 1:
            raise ValueError(f"not an IPv4 address: {addr[0]!r}")
        outlen[0] = sizeof(sockaddr_in)
        return 0
    s6 = <sockaddr_in6 *>out
    s6.sin6_family = AF_INET6
    s6.sin6_port = htons(port)
    if inet_pton(AF_INET6, host, &s6.sin6_addr) != 1:
        if inet_pton(AF_INET, host, v4) != 1:
            raise ValueError(f"not an IP address: {addr[0]!r}")
        memset(&s6.sin6_addr, 0, 16)
        s6.sin6_addr.s6_addr[10] = 0xFF
        s6.sin6_addr.s6_addr[11] = 0xFF
        memcpy(&s6.sin6_addr.s6_addr[12], v4, 4)
    if len(addr) >= 4:
        s6.sin6_scope_id = int(addr[3])
    outlen[0] = sizeof(sockaddr_in6)
    return 0


# ---------------------------------------------------------------------------------------------
# Endpoint: the media transport of one peer (one client or node)
# ---------------------------------------------------------------------------------------------

cdef class Endpoint:
    """SRTP contexts, the selected remote address and the bound incoming SSRCs of one peer.

    Python sets keys (`set_srtp`) when DTLS completes, the path (`set_path`) when ICE selects or
    moves it, and binds incoming SSRCs (`bind`) when it recognises a new stream. The loop reads.
    """

    cdef public object owner                 # the Python peer (opaque here)
    cdef SrtpContext rx
    cdef SrtpContext tx
    cdef sockaddr_storage path
    cdef socklen_t path_len
    cdef bint has_path
    cdef AddrKey path_key                     # `path` as an address-table key
    cdef uint8_t path_local                   # Router local-address index media to `path` leaves from (0: any)
    cdef uint32_t ssrcs[MAX_SSRCS]
    cdef list streams                        # InStream per bound SSRC, same index as ssrcs
    cdef int nssrcs
    cdef public uint64_t twcc_next           # next transport-wide sequence number we send
    cdef public uint64_t rx_packets, rx_bytes, tx_packets, tx_bytes, rtcp_in, rtcp_out
    cdef public uint64_t srtp_auth_failures, unbound_packets
    cdef public bint gso_refused              # the kernel refused a GSO send to this peer's path
    # transport-wide CC arrivals of incoming media (draft-holmer-rmcat-transport-wide-cc-extensions)
    cdef int twcc_id                          # the peer's id for the transport-cc extension (0: none)
    cdef uint16_t *twcc_seq                  # TWCC_RING arrivals, allocated by set_transport_cc
    cdef int64_t *twcc_arrival_us
    cdef public uint64_t twcc_written, twcc_read
    cdef SendLog *sendlog                     # outgoing transport-wide records (_layers.pxi), lazily

    def __cinit__(self):
        self.streams = []
        self.nssrcs = 0
        self.has_path = False

    def __dealloc__(self):
        free(self.twcc_seq)
        free(self.twcc_arrival_us)
        sendlog_free(self.sendlog)

    def __init__(self, owner=None):
        self.owner = owner

    def set_srtp(self, SrtpContext rx, SrtpContext tx):
        self.rx = rx
        self.tx = tx

    @property
    def ready(self) -> bool:
        return self.rx is not None and self.tx is not None and self.has_path

    def set_transport_cc(self, int ext_id):
        """The extension id this peer uses for transport-wide sequence numbers on what it sends us
        (a publisher: the arrival ring is allocated here; viewers send no media and have none)."""
        if ext_id and self.twcc_seq == NULL:
            self.twcc_seq = <uint16_t *>calloc(TWCC_RING, sizeof(uint16_t))
            self.twcc_arrival_us = <int64_t *>calloc(TWCC_RING, sizeof(int64_t))
            if self.twcc_seq == NULL or self.twcc_arrival_us == NULL:
                free(self.twcc_seq)
                free(self.twcc_arrival_us)
                self.twcc_seq = NULL
                self.twcc_arrival_us = NULL
                raise MemoryError()
        self.twcc_id = ext_id if self.twcc_seq != NULL else 0

    def bind(self, uint32_t ssrc, InStream stream):
        """Route incoming RTP with `ssrc` to `stream` (replaces an earlier binding)."""
        cdef int i
        for i in range(self.nssrcs):
            if self.ssrcs[i] == ssrc:
                self.streams[i] = stream
                return
        if self.nssrcs >= MAX_SSRCS:
            raise OverflowError("too many SSRCs on one endpoint")
        self.ssrcs[self.nssrcs] = ssrc
        self.streams.append(stream)
        self.nssrcs += 1

    def unbind_all(self):
        """The peer is gone: its streams route nothing more. Their packet stores go too (viewers'
        rewrite epochs may still refer to the InStreams for a while: they find nothing)."""
        cdef InStream st
        for st in self.streams:
            srcstore_free(st.store)
            st.store = NULL
            kfcache_free(st.kfc)
            st.kfc = NULL
        self.nssrcs = 0
        self.streams = []

    def take_twcc(self):
        """Arrivals recorded since the last call: list of (transport_seq16, arrival_us)."""
        cdef list out = []
        cdef uint64_t i
        if self.twcc_seq == NULL:
            return out
        if self.twcc_written - self.twcc_read > TWCC_RING:
            self.twcc_read = self.twcc_written - TWCC_RING
        i = self.twcc_read
        while i < self.twcc_written:
            out.append((self.twcc_seq[i & (TWCC_RING - 1)], self.twcc_arrival_us[i & (TWCC_RING - 1)]))
            i += 1
        self.twcc_read = self.twcc_written
        return out

    cdef inline InStream lookup(self, uint32_t ssrc):
        cdef int i
        for i in range(self.nssrcs):
            if self.ssrcs[i] == ssrc:
                return <InStream>PyList_GET_ITEM(self.streams, i)
        return None

    def protect_rtcp(self, bytes packet) -> bytes:
        if self.tx is None:
            raise RuntimeError("no SRTP keys yet")
        self.rtcp_out += 1
        return self.tx.protect_rtcp_packet(packet)

    def protect_rtp(self, bytes packet) -> bytes:
        if self.tx is None:
            raise RuntimeError("no SRTP keys yet")
        return self.tx.protect(packet)


# ---------------------------------------------------------------------------------------------
# InStream: one incoming RTP stream (an SSRC of a publisher's track / simulcast layer)
# ---------------------------------------------------------------------------------------------

cdef class InStream:
    """State of one incoming SSRC: sequence/timestamp unwrap, keyframe sniffing, its subscribers.

    A stream bound as RTX (`rtx_of` set) is decapsulated (RFC 4588 §4: OSN first two payload
    bytes) and processed as a packet of its media stream.
    """

    cdef public object owner
    cdef public uint32_t ssrc
    cdef public int codec
    cdef public int payload_type
    cdef public int clock_rate
    cdef InStream media                      # for an RTX stream: the stream it repairs
    cdef list outs                           # OutTrack subscribers
    cdef public bint started
    cdef public uint64_t highest_seq         # extended
    cdef public uint64_t first_seq
    cdef public uint64_t highest_ts          # extended
    cdef public uint64_t packets, bytes, keyframes, padding, rtx_packets, duplicates_hint
    cdef public uint64_t frames              # packets that advanced the highest timestamp: frames sent
    cdef public double last_packet_at
    cdef public double last_keyframe_at
    cdef public double jitter                # RFC 3550 §6.4.1 interarrival jitter, timestamp units
    cdef double last_transit
    cdef public uint32_t last_ts
    # publisher's extension ids for the ones the loop reads
    cdef public int ext_audio_level, ext_video_orientation, ext_dd
    cdef LayerInfo info                      # picture size seen at keyframes (_layers.pxi)
    # loss repair (_repair.pxi)
    cdef RecvLog rlog
    cdef KfCache *kfc
    cdef SrcStore *store                     # retransmission store (_resend.pxi), when a viewer has NACK
    cdef bint loss_flagged                   # queued in Router.loss_events, until take_gaps()
    cdef public int64_t last_keyframe_seq    # extended seq of the last keyframe start (-1: none)
    cdef public uint64_t cache_hits, cache_misses, cache_packets_replayed

    def __init__(self, owner=None, uint32_t ssrc=0, int codec=0, int payload_type=0,
                 int clock_rate=90000):
        self.owner = owner
        self.ssrc = ssrc
        self.codec = codec
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.outs = []
        self.started = False
        self.last_keyframe_seq = -1

    def set_rtx_of(self, InStream media):
        self.media = media

    def __dealloc__(self):
        kfcache_free(self.kfc)
        srcstore_free(self.store)

    # -- loss repair (_repair.pxi) ------------------------------------------------------------

    def enable_keyframe_cache(self, bint on=True):
        """Keep the packets since the last keyframe start for new viewers (video layers)."""
        if on and self.kfc == NULL:
            self.kfc = kfcache_new()
        elif not on and self.kfc != NULL:
            kfcache_free(self.kfc)
            self.kfc = NULL

    @property
    def keyframe_cache(self):
        """(packets, bytes, age at `last_packet_at`, valid) of the cache, or None when off."""
        if self.kfc == NULL:
            return None
        return (self.kfc.count, self.kfc.used,
                self.last_packet_at - self.kfc.started_at if self.kfc.count else 0.0, bool(self.kfc.valid))

    @property
    def keyframe_cache_sizing(self):
        """(bytes allocated, longest recent keyframe interval in s or None, age bound in s) of the
        cache, or None when off (_repair.pxi: sized by the stream's own keyframe interval)."""
        cdef int i
        cdef double longest = 0.0
        if self.kfc == NULL:
            return None
        for i in range(min(self.kfc.n_intervals, <int>KF_INTERVALS)):
            longest = max(longest, self.kfc.intervals[i])
        return (kfcache_footprint(self.kfc), longest if self.kfc.n_intervals else None,
                kfcache_max_age(self.kfc))

    def take_gaps(self):
        """Gaps recorded since the last call: ([(first_missing_ext_seq, count), ...], overflowed)."""
        cdef list out = []
        cdef uint64_t i
        cdef bint overflowed = self.rlog.gap_overflows != 0
        i = self.rlog.gap_read
        while i < self.rlog.gap_written:
            out.append((self.rlog.gap_start[i & (GAP_RING - 1)], self.rlog.gap_count[i & (GAP_RING - 1)]))
            i += 1
        self.rlog.gap_read = self.rlog.gap_written
        self.rlog.gap_overflows = 0
        self.loss_flagged = False
        return out, overflowed

    def missing(self, seqs):
        """Those of the extended sequence numbers `seqs` still missing (unknown ones: dropped)."""
        return [s for s in seqs if recvlog_state(&self.rlog, s) == 0]

    def packet_state(self, int64_t ext_seq) -> int:
        """1 received, 0 missing, -1 unknown (outside the received window)."""
        return recvlog_state(&self.rlog, ext_seq)

    @property
    def repair_counts(self) -> dict:
        return {"duplicates": self.rlog.duplicates, "too_old": self.rlog.too_old,
                "filled": self.rlog.filled, "missing": self.rlog.missing_total,
                "cache_hits": self.cache_hits, "cache_misses": self.cache_misses,
                "cache_packets_replayed": self.cache_packets_replayed,
                "cache_overflows": self.kfc.overflows if self.kfc != NULL else 0}

    @property
    def subscribers(self):
        return list(self.outs)

    def add(self, OutTrack out):
        if out.rtx_on:
            srcstore_enable(self)            # before its first packet: the viewer may NACK it
        if out not in self.outs:
            self.outs.append(out)

    @property
    def retransmission_store(self):
        """(packets stored, arena bytes) of the retransmission store, or None when there is none."""
        if self.store == NULL:
            return None
        return (self.store.packets, self.store.arena_size)

    def remove(self, OutTrack out):
        if out in self.outs:
            self.outs.remove(out)

    @property
    def expected(self) -> int:
        return (self.highest_seq - self.first_seq + 1) if self.started else 0


# ---------------------------------------------------------------------------------------------
# OutTrack: one track as forwarded to one subscriber
# ---------------------------------------------------------------------------------------------

cdef class OutTrack:
    """Rewrite state of one subscription: what the viewer sees is one continuous RTP stream.

    Sequence numbers and timestamps are 64-bit inside (out = in + offset); a re-base (new
    subscriber, publisher reconnect, layer switch) recomputes the offsets at the first packet that
    passes the gate so the viewer's numbers stay continuous and monotonic.
    """

    cdef public object owner
    cdef Endpoint ep
    cdef public uint32_t ssrc
    cdef public int payload_type
    cdef public int clock_rate
    cdef uint8_t ext_map[256]                # publisher extension id -> viewer id (0: strip)
    cdef public int twcc_id                  # viewer id for transport-wide-cc (0: none)
    cdef public int abs_send_time_id         # viewer id for abs-send-time (0: none)
    cdef public bint video
    cdef public bint need_keyframe
    cdef public bint paused
    cdef bint rebase
    cdef public bint has_out
    cdef int64_t seq_offset
    cdef int64_t ts_offset
    cdef uint64_t start_in_seq
    cdef public uint64_t last_out_seq        # extended
    cdef public uint64_t last_out_ts         # extended
    cdef public double last_out_at
    cdef public uint64_t packets, bytes, keyframes_forwarded
    cdef uint64_t odrops[N_ODROPS]
    cdef public uint32_t last_in_ts          # source timestamp of the last forwarded packet
    cdef public bint keyframe_wanted         # set when gated on a keyframe: Python polls it
    cdef LayerRw lr                          # source gate, picture ids, padding (_layers.pxi)
    # loss repair (_repair.pxi)
    cdef bint rtx_on                         # the viewer negotiated NACK (_resend.pxi)
    cdef RtxEpoch *epochs                    # how packets were rewritten, oldest first (lazily)
    cdef int nepochs, epochs_cap
    cdef list rtx_srcs                       # the InStreams epochs point at (keeps them alive)
    cdef uint64_t *sent_rec                  # same-SSRC resends only: transport seq / send time per packet
    cdef uint32_t sent_slots
    cdef Resent *recent                      # packets resent lately (lazily)
    cdef bint rtx_ssrc_set                   # RFC 4588 RTX negotiated: resend on rtx_ssrc/rtx_pt
    cdef public uint32_t rtx_ssrc
    cdef public int rtx_pt
    cdef int64_t rtx_next_seq                # extended RTX sequence number (own numbering)
    cdef public double rtx_rate              # token bucket: bytes/s and burst bytes
    cdef public double rtx_burst
    cdef public double rtx_tokens
    cdef double rtx_refilled_at
    cdef public double rtx_min_interval      # do not resend one packet twice within this (an RTT)
    cdef public int64_t keyframe_floor       # NACKs for older viewer seqs are ignored
    cdef int64_t floor_ts
    cdef uint64_t rcount[N_XCOUNT]
    cdef public uint64_t cache_replays
    cdef public int src_red_pt, red_pt, src_payload_type   # RED: publisher PT, viewer PT (-1 none)

    def __init__(self, Endpoint ep, uint32_t ssrc, int payload_type, int clock_rate, bint video,
                 uint16_t initial_seq=0, uint32_t initial_ts=0, owner=None):
        self.ep = ep
        self.owner = owner
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.video = video
        self.need_keyframe = video
        self.rebase = True
        self.has_out = False
        self.last_out_seq = SEQ_BASE + initial_seq - 1   # headroom so offsets stay positive-safe
        self.src_red_pt = -1
        self.red_pt = -1
        self.src_payload_type = payload_type
        self.rtx_pt = -1
        self.floor_ts = -1
        self.rtx_min_interval = 0.02
        memset(self.rcount, 0, sizeof(self.rcount))
        self.last_out_ts = TS_BASE + initial_ts
        memset(self.ext_map, 0, 256)
        memset(self.odrops, 0, sizeof(self.odrops))

    def map_extension(self, int source_id, int viewer_id):
        """Forward the publisher's extension `source_id` to the viewer as `viewer_id` (0: strip)."""
        if not 0 < source_id < 256 or not 0 <= viewer_id < 256:
            raise ValueError("extension ids are 1..255")
        if self.ext_map[source_id] != viewer_id:
            rtx_forget_epochs(self)
        self.ext_map[source_id] = viewer_id

    def clear_extensions(self):
        rtx_forget_epochs(self)
        memset(self.ext_map, 0, 256)

    def __dealloc__(self):
        rtx_out_free(self)

    # -- loss repair (_repair.pxi) ------------------------------------------------------------

    def enable_retransmissions(self):
        """The viewer negotiated NACK: remember how packets were rewritten, so that they can be
        rebuilt from their layer's store (attach to the InStream after this: it allocates it)."""
        self.rtx_on = True

    def set_rtx(self, uint32_t rtx_ssrc, int rtx_payload_type, uint16_t initial_seq=0):
        """Resend as RFC 4588 RTX on `rtx_ssrc` with `rtx_payload_type` (else: same SSRC)."""
        self.rtx_ssrc = rtx_ssrc
        self.rtx_pt = rtx_payload_type
        self.rtx_ssrc_set = True
        self.rtx_next_seq = SEQ_BASE + initial_seq

    def set_retransmission_policy(self, double rate_bytes_per_s, double burst_bytes, double min_interval_s):
        self.rtx_rate = rate_bytes_per_s
        self.rtx_burst = burst_bytes
        self.rtx_min_interval = min_interval_s

    def set_red(self, int source_red_pt, int viewer_red_pt, int source_payload_type):
        """Opus RED: the publisher's RED PT (-1: none), the viewer's (-1: strip to the primary)."""
        if (source_red_pt, viewer_red_pt, source_payload_type) != (self.src_red_pt, self.red_pt, self.src_payload_type):
            rtx_forget_epochs(self)
        self.src_red_pt = source_red_pt
        self.red_pt = viewer_red_pt
        self.src_payload_type = source_payload_type

    @property
    def retransmissions(self) -> dict:
        return {RTX_COUNTERS[i]: self.rcount[i] for i in range(N_XCOUNT)}

    @property
    def retransmission_store(self) -> bool:
        return self.rtx_on

    @property
    def rewrite_epochs(self) -> int:
        """Rewrite epochs remembered for resends (_resend.pxi)."""
        return self.nepochs

    def request_rebase(self, bint need_keyframe=True):
        """Recompute offsets at the next packet that passes the gate (publisher changed, switch)."""
        self.rebase = True
        self.need_keyframe = need_keyframe and self.video

    @property
    def drops(self) -> dict:
        return {OUT_DROP_REASONS[i]: self.odrops[i] for i in range(N_ODROPS) if self.odrops[i]}

    @property
    def endpoint(self):
        return self.ep

    @property
    def seq_offset(self) -> int:
        return self.seq_offset

    @property
    def ts_offset(self) -> int:
        """Add to a source extended timestamp (modulo 2**32) to get the viewer's timestamp."""
        return self.ts_offset

    def out_timestamp_at(self, double now) -> int:
        """The viewer-side RTP timestamp that corresponds to `now` (for sender reports)."""
        if not self.has_out:
            return 0
        return <uint32_t>((self.last_out_ts + <uint64_t>((now - self.last_out_at) * self.clock_rate
                                                          if now > self.last_out_at else 0)) & 0xFFFFFFFF)


# ---------------------------------------------------------------------------------------------
# Router: the socket loop
# ---------------------------------------------------------------------------------------------

cdef class Router:
    """Owns the receive/send batches of the shared UDP socket and the address table."""

    cdef int fd
    cdef int family
    cdef AddrKey *keys
    cdef PyObject **values                   # borrowed: `self.endpoints_by_key` holds references
    cdef dict endpoints_by_key
    cdef uint32_t cap
    cdef uint32_t count
    cdef uint32_t tombstones
    # receive batch
    cdef mmsghdr rmsgs[BATCH]
    cdef iovec riov[BATCH]
    cdef sockaddr_storage raddrs[BATCH]
    cdef uint64_t rctrl[BATCH * RCTRL_WORDS]  # kernel receive timestamps (8-byte aligned cmsgs)
    cdef uint8_t *rbuf
    cdef int64_t queue_delay_max_ns          # longest wait in the socket seen by a drain (take_queue_delay)
    # media packets of the current receive batch, fanned out stream by stream (_fan_out_batch)
    cdef FanItem fan[BATCH]
    cdef int nfan
    # send batch: one datagram per slot; flush() coalesces runs to one viewer into GSO sends
    cdef mmsghdr smsgs[SEND_BATCH]
    cdef iovec siov[SEND_BATCH]
    cdef sockaddr_storage saddrs[SEND_BATCH]
    cdef uint8_t *sbuf
    cdef int npending
    cdef PyObject *sendto_ep[SEND_BATCH]     # the Endpoint of each queued datagram (borrowed: the
                                             # queue is flushed before any Python code runs, so a
                                             # peer's path cannot change within a flush)
    cdef uint8_t slocal[SEND_BATCH]           # the local-address index each queued datagram leaves from
    cdef mmsghdr gmsgs[SEND_BATCH]
    cdef int gfirst[SEND_BATCH]
    cdef int gcount[SEND_BATCH]
    cdef uint8_t *gctrl                       # SEND_CTRL bytes per message of gmsgs
    cdef uint8_t *pctrl                       # PKTINFO_CTRL bytes per message of smsgs (_send_plain)
    # local addresses (see read_local): index 0 means unknown; the received batch's, per datagram
    cdef LocalAddr laddrs[MAX_LOCALS]
    cdef int nlocals
    cdef uint8_t rlocal[BATCH]
    cdef public uint64_t locals_overflow      # datagrams to a local address beyond MAX_LOCALS (kernel picks)
    cdef public uint64_t source_refused       # sends refused from a source address gone from the host
    cdef AddrKey cur_key                      # note_arrival: the datagram Python handles now
    cdef uint8_t cur_local
    cdef bint cur_valid
    cdef public bint gso                     # coalesce equal-size datagrams to one address (UDP GSO)
    cdef public uint64_t gso_sends, gso_segments, gso_failures
    cdef uint64_t drops[N_DROPS]
    cdef public uint64_t datagrams_in, datagrams_out, bytes_in, bytes_out, send_calls, wakeups
    cdef public uint64_t forwarded, injected
    cdef double now
    cdef list loss_events                    # InStreams with new gaps (_repair.pxi), Python drains
    cdef void *fwd_src                       # the InStream being fanned out (for rewrite epochs)
    cdef int64_t ts_shift                    # keyframe-cache replay: timestamp given - source's own
    cdef list captured                       # test hook: datagrams kept instead of sent

    def __cinit__(self):
        self.rbuf = <uint8_t *>calloc(BATCH, MAX_DGRAM)
        self.sbuf = <uint8_t *>calloc(SEND_BATCH, OUT_CAPACITY)
        self.gctrl = <uint8_t *>calloc(SEND_BATCH, SEND_CTRL)
        self.pctrl = <uint8_t *>calloc(SEND_BATCH, PKTINFO_CTRL)
        self.nlocals = 1
        self.cap = ADDR_TABLE_MIN
        self.keys = <AddrKey *>calloc(self.cap, sizeof(AddrKey))
        self.values = <PyObject **>calloc(self.cap, sizeof(PyObject *))
        if (self.rbuf == NULL or self.sbuf == NULL or self.gctrl == NULL or self.pctrl == NULL
                or self.keys == NULL or self.values == NULL):
            raise MemoryError()

    def __dealloc__(self):
        free(self.rbuf)
        free(self.sbuf)
        free(self.gctrl)
        free(self.pctrl)
        free(self.keys)
        free(self.values)

    def __init__(self, int fd, int family, bint gso=True):
        cdef int i
        self.fd = fd
        self.family = family
        self.gso = gso
        self.endpoints_by_key = {}
        self.npending = 0
        memset(self.drops, 0, sizeof(self.drops))
        for i in range(BATCH):
            self.riov[i].iov_base = self.rbuf + i * MAX_DGRAM
            self.riov[i].iov_len = MAX_DGRAM
            memset(&self.rmsgs[i], 0, sizeof(mmsghdr))
            self.rmsgs[i].msg_hdr.msg_name = &self.raddrs[i]
            self.rmsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self.rmsgs[i].msg_hdr.msg_iov = &self.riov[i]
            self.rmsgs[i].msg_hdr.msg_iovlen = 1
            self.rmsgs[i].msg_hdr.msg_control = &self.rctrl[i * RCTRL_WORDS]
        for i in range(SEND_BATCH):
            memset(&self.gmsgs[i], 0, sizeof(mmsghdr))
            self.siov[i].iov_base = self.sbuf + i * OUT_CAPACITY
            memset(&self.smsgs[i], 0, sizeof(mmsghdr))
            self.smsgs[i].msg_hdr.msg_name = &self.saddrs[i]
            self.smsgs[i].msg_hdr.msg_iov = &self.siov[i]
            self.smsgs[i].msg_hdr.msg_iovlen = 1

    # -- address table ------------------------------------------------------------------------

    cdef int _find(self, const AddrKey *k) noexcept:
        cdef uint32_t mask = self.cap - 1
        cdef uint32_t i = key_hash(k) & mask
        cdef uint32_t probes = 0
        while probes < self.cap:
            if self.keys[i].used == 0:
                return -1
            if self.keys[i].used == 1 and self.keys[i].port == k.port and memcmp(self.keys[i].ip, k.ip, 16) == 0:
                return i
            i = (i + 1) & mask
            probes += 1
        return -1

    cdef void _grow(self) except *:
        cdef AddrKey *old_keys = self.keys
        cdef PyObject **old_values = self.values
        cdef uint32_t old_cap = self.cap, i, j, mask
        self.cap = old_cap * 2
        self.keys = <AddrKey *>calloc(self.cap, sizeof(AddrKey))
        self.values = <PyObject **>calloc(self.cap, sizeof(PyObject *))
        if self.keys == NULL or self.values == NULL:
            raise MemoryError()
        mask = self.cap - 1
        self.tombstones = 0
        for i in range(old_cap):
            if old_keys[i].used == 1:
                j = key_hash(&old_keys[i]) & mask
                while self.keys[j].used:
                    j = (j + 1) & mask
                self.keys[j] = old_keys[i]
                self.values[j] = old_values[i]
        free(old_keys)
        free(old_values)

    cdef int _key_from_tuple(self, object addr, AddrKey *k) except -1:
        cdef sockaddr_storage sa
        cdef socklen_t n
        tuple_to_sockaddr(addr, AF_INET6, &sa, &n)
        sockaddr_key(&sa, k)
        return 0

    def map_address(self, object addr, Endpoint ep):
        """Accept datagrams from `addr` (a validated ICE candidate address) for `ep`."""
        cdef AddrKey k
        cdef uint32_t mask, i
        cdef int found
        self._key_from_tuple(addr, &k)
        found = self._find(&k)
        pykey = (bytes(k.ip[:16]), k.port)
        if found >= 0:
            self.values[found] = <PyObject *>ep
            self.endpoints_by_key[pykey] = ep
            return
        if (self.count + self.tombstones + 1) * 2 > self.cap:
            self._grow()
        mask = self.cap - 1
        i = key_hash(&k) & mask
        while self.keys[i].used == 1:
            i = (i + 1) & mask
        if self.keys[i].used == 2:
            self.tombstones -= 1
        k.used = 1
        self.keys[i] = k
        self.values[i] = <PyObject *>ep
        self.endpoints_by_key[pykey] = ep
        self.count += 1

    def unmap_address(self, object addr):
        cdef AddrKey k
        cdef int found
        self._key_from_tuple(addr, &k)
        found = self._find(&k)
        if found >= 0:
            self.keys[found].used = 2
            self.values[found] = NULL
            self.count -= 1
            self.tombstones += 1
        self.endpoints_by_key.pop((bytes(k.ip[:16]), k.port), None)

    def endpoint_for(self, object addr):
        cdef AddrKey k
        cdef int found
        self._key_from_tuple(addr, &k)
        found = self._find(&k)
        return <object>self.values[found] if found >= 0 else None

    @property
    def mapped_addresses(self) -> int:
        return self.count

    def set_path(self, Endpoint ep, object addr):
        """Send `ep`'s media to `addr` from now on (ICE nominated it, or consent moved it).

        Its source address: that of the datagram being handled (`note_arrival`) when it came from
        `addr`, else the one already known for `addr`; then the local address of every DTLS, SRTP
        or SRTCP datagram from `addr` (the pair the peer uses; STUN checks of other pairs do not
        move it)."""
        cdef AddrKey k
        if addr is None:
            ep.has_path = False
            ep.path_local = 0
            return
        tuple_to_sockaddr(addr, self.family, &ep.path, &ep.path_len)
        sockaddr_key(&ep.path, &k)
        if self.cur_valid and same_key(&k, &self.cur_key):
            ep.path_local = self.cur_local
        elif not (ep.has_path and same_key(&k, &ep.path_key)):
            ep.path_local = 0
        ep.path_key = k
        ep.has_path = True

    # -- local addresses ------------------------------------------------------------------------

    def note_arrival(self, object addr, int local):
        """The datagram Python handles next came from `addr` to local address `local` (the index
        `on_readable` handed out with it): a path set while handling it sends from there."""
        if addr is None or not 0 <= local < self.nlocals:
            self.cur_valid = False
            return
        self._key_from_tuple(addr, &self.cur_key)
        self.cur_local = local
        self.cur_valid = True

    def local_address(self, int local):
        """The address behind a local-address index ("10.0.0.5", "fe80::1%2"), None for 0/unknown."""
        cdef char buf[64]
        cdef LocalAddr *a
        if not 0 < local < self.nlocals:
            return None
        a = &self.laddrs[local]
        if is_v4_mapped(a.ip):
            inet_ntop(AF_INET, &a.ip[12], buf, 64)
            return buf.decode("ascii")
        inet_ntop(AF_INET6, a.ip, buf, 64)
        return buf.decode("ascii") + (f"%{a.ifindex}" if a.ifindex else "")

    @property
    def local_addresses(self) -> list:
        """Every local address datagrams arrived on so far, by index (index 0: None)."""
        return [self.local_address(i) for i in range(self.nlocals)]

    def path_local(self, Endpoint ep):
        """The local address `ep`'s media leaves from (None: not known, the kernel picks)."""
        return self.local_address(ep.path_local) if ep.has_path else None

    cdef uint8_t _local_index(self, msghdr *h) noexcept:
        cdef LocalAddr a
        cdef int i
        if not read_local(h, &a):
            return 0
        for i in range(1, self.nlocals):
            if memcmp(self.laddrs[i].ip, a.ip, 16) == 0 and self.laddrs[i].ifindex == a.ifindex:
                return <uint8_t>i
        if self.nlocals >= MAX_LOCALS:
            self.locals_overflow += 1
            return 0
        self.laddrs[self.nlocals] = a
        self.nlocals += 1
        return <uint8_t>(self.nlocals - 1)

    def sendto(self, bytes data, object addr, int local=-1):
        """Send one datagram Python built (STUN, DTLS, RTCP) from local address `local`: the index
        of the datagram it answers, or -1 for "the path's" (that of the endpoint whose path `addr`
        is; the kernel picks when none). Raises OSError as socket.sendto does."""
        cdef sockaddr_storage sa
        cdef socklen_t salen
        cdef AddrKey k
        cdef int idx, rc, err
        cdef Endpoint ep
        cdef msghdr h
        cdef iovec iov
        cdef uint64_t ctrl[5]                   # PKTINFO_CTRL bytes, 8-byte aligned
        tuple_to_sockaddr(addr, self.family, &sa, &salen)
        if local < 0:
            local = 0
            sockaddr_key(&sa, &k)
            idx = self._find(&k)
            if idx >= 0:
                ep = <Endpoint>self.values[idx]
                if ep.has_path and same_key(&k, &ep.path_key):
                    local = ep.path_local
        memset(&h, 0, sizeof(h))
        iov.iov_base = PyBytes_AS_STRING(data)
        iov.iov_len = PyBytes_GET_SIZE(data)
        h.msg_name = &sa
        h.msg_namelen = salen
        h.msg_iov = &iov
        h.msg_iovlen = 1
        if 0 < local < self.nlocals:
            h.msg_control = ctrl
            h.msg_controllen = write_pktinfo(<uint8_t *>ctrl, &self.laddrs[local], self.family)
        rc = sendmsg(self.fd, &h, 0)
        if rc < 0 and (errno == EINVAL or errno == ENETUNREACH) and h.msg_control != NULL:
            # the address left the host: retried without it
            self.source_refused += 1
            h.msg_control = NULL
            h.msg_controllen = 0
            rc = sendmsg(self.fd, &h, 0)
        if rc < 0:
            err = errno
            raise OSError(err, os_strerror(err))

    # -- counters -----------------------------------------------------------------------------

    @property
    def drop_counts(self) -> dict:
        return {DROP_REASONS[i]: self.drops[i] for i in range(N_DROPS)}

    # -- loss repair (_repair.pxi) ------------------------------------------------------------

    def take_loss_events(self) -> list:
        """InStreams that recorded a gap since the last call (each once; see InStream.take_gaps)."""
        out, self.loss_events = self.loss_events or [], None
        return out

    def resend(self, OutTrack out, seqs, double now) -> list:
        """Answer one viewer NACK (16-bit seqs) from `out`'s ring; returns the extended seqs it
        did not have."""
        return _repair_resend(self, out, seqs, now)

    def replay_cache(self, InStream stream, OutTrack out, double now) -> int:
        """Start `out` (gated on a keyframe, sendable) from `stream`'s keyframe cache at once."""
        return _repair_replay(self, stream, out, now)

    def capture(self, bint on=True):
        """Test hook: keep outgoing datagrams (take_captured) instead of sending them."""
        self.captured = [] if on else None

    def take_captured(self) -> list:
        """Test hook: the datagrams (protected) kept since the last call."""
        out = self.captured or []
        if self.captured is not None:
            self.captured = []
        return out

    # -- receive ------------------------------------------------------------------------------

    def on_readable(self, double now):
        """Drain the socket; forward SRTP media; return the datagrams Python must handle."""
        cdef list slow = None
        cdef int got, i, n, total = 0
        cdef uint8_t b0
        cdef AddrKey k
        cdef int idx
        cdef Endpoint ep
        cdef uint8_t *p
        cdef uint8_t lidx
        cdef uint64_t forwarded_before = self.forwarded
        self.now = now
        self.wakeups += 1
        while total < MAX_READ_PER_WAKEUP and self.forwarded - forwarded_before < MAX_FORWARD_PER_WAKEUP:
            for i in range(BATCH):
                self.rmsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
                self.rmsgs[i].msg_hdr.msg_controllen = RCTRL_WORDS * 8
                self.rmsgs[i].msg_hdr.msg_flags = 0
            got = recvmmsg(self.fd, self.rmsgs, BATCH, MSG_DONTWAIT, NULL)
            if got <= 0:
                break
            if total == 0:
                self._note_queue_delay()   # the drain's first datagram waited longest
            total += got
            for i in range(got):
                p = self.rbuf + i * MAX_DGRAM
                n = self.rmsgs[i].msg_len
                self.datagrams_in += 1
                self.bytes_in += n
                if self.rmsgs[i].msg_hdr.msg_flags & 0x20:   # MSG_TRUNC
                    self.drops[D_TRUNCATED] += 1
                    continue
                if n < 1:
                    self.drops[D_UNKNOWN_FIRST_BYTE] += 1
                    continue
                b0 = p[0]
                lidx = self._local_index(&self.rmsgs[i].msg_hdr)
                ep = None
                if sockaddr_key(&self.raddrs[i], &k) == 0:
                    idx = self._find(&k)
                    if idx >= 0:
                        ep = <Endpoint>self.values[idx]
                # RFC 7983 §7: 0-3 STUN, 20-63 DTLS, 128-191 RTP/RTCP.
                if b0 <= 3:
                    if slow is None:
                        slow = []
                    slow.append((KIND_STUN, ep, PyBytes_FromStringAndSize(<char *>p, n),
                                 addr_to_tuple(&self.raddrs[i], self.family), lidx))
                elif 20 <= b0 <= 63:
                    if ep is None:
                        self.drops[D_UNKNOWN_ADDRESS] += 1
                        continue
                    if lidx and ep.has_path and same_key(&k, &ep.path_key):
                        ep.path_local = lidx
                    if slow is None:
                        slow = []
                    slow.append((KIND_DTLS, ep, PyBytes_FromStringAndSize(<char *>p, n),
                                 addr_to_tuple(&self.raddrs[i], self.family), lidx))
                elif 128 <= b0 <= 191:
                    if ep is None:
                        self.drops[D_UNKNOWN_ADDRESS] += 1
                        continue
                    if lidx and ep.has_path and same_key(&k, &ep.path_key):
                        ep.path_local = lidx   # the pair the peer sends media on
                    if ep.rx is None:
                        self.drops[D_NOT_READY] += 1
                        continue
                    if n >= 2 and 192 <= p[1] <= 223:
                        # RFC 5761 §4: RTCP packet types 192-223 (64-95 with the marker bit).
                        n = ep.rx.unprotect_rtcp(p, n)
                        if n < 0:
                            if n == _SRTP_AUTH:
                                self.drops[D_SRTCP_AUTH] += 1
                                ep.srtp_auth_failures += 1
                            else:
                                self.drops[D_SRTCP_OTHER] += 1
                            continue
                        ep.rtcp_in += 1
                        if slow is None:
                            slow = []
                        slow.append((KIND_RTCP, ep, PyBytes_FromStringAndSize(<char *>p, n), None, 0))
                    else:
                        slow = self._receive_rtp(ep, p, n, slow)
                else:
                    self.drops[D_UNKNOWN_FIRST_BYTE] += 1
            if self.nfan:
                self._fan_out_batch()   # before the next recvmmsg reuses the receive buffers
            if got < BATCH:
                break
        self.flush()
        if self.loss_events:
            if slow is None:
                slow = []
            slow.append((KIND_LOSS, None, b"", None, 0))
        return slow

    cdef void _note_queue_delay(self) noexcept:
        """How long the oldest datagram of this drain waited in the socket: its kernel receive time
        (SO_TIMESTAMPNS, when the socket has it on) against now. Under overload this is what grows
        first (the socket buffer holds seconds of media); `take_queue_delay` reports the maximum."""
        cdef timespec real
        cdef int64_t delay, received = kernel_rx_time_ns(&self.rmsgs[0].msg_hdr)
        if received < 0:
            return
        clock_gettime(CLOCK_REALTIME, &real)
        delay = <int64_t>real.tv_sec * 1000000000 + real.tv_nsec - received
        if delay > self.queue_delay_max_ns:
            self.queue_delay_max_ns = delay

    def take_queue_delay(self) -> float:
        """The longest time (s) a datagram waited in the socket before a drain reached it, since
        the last call (0.0 if the socket has no kernel timestamps on)."""
        cdef int64_t d = self.queue_delay_max_ns
        self.queue_delay_max_ns = 0
        return d / 1e9 if d > 0 else 0.0

    cdef list _receive_rtp(self, Endpoint ep, uint8_t *p, int n, list slow):
        cdef unsigned long long index = 0
        cdef RtpView v
        cdef InStream st
        cdef int m = ep.rx.unprotect_rtp(p, n, &index)
        cdef int off, elen
        if m < 0:
            if m == _SRTP_AUTH:
                self.drops[D_SRTP_AUTH] += 1
                ep.srtp_auth_failures += 1
            elif m == _SRTP_REPLAY:
                self.drops[D_SRTP_REPLAY] += 1
            else:
                self.drops[D_SRTP_OTHER] += 1
            return slow
        if parse_rtp(p, m, &v) < 0:
            self.drops[D_MALFORMED_RTP] += 1
            return slow
        ep.rx_packets += 1
        ep.rx_bytes += m
        if ep.twcc_id:
            off = find_extension(p, &v, ep.twcc_id, &elen)
            if off >= 0 and elen == 2:
                ep.twcc_seq[ep.twcc_written & (TWCC_RING - 1)] = rd16(p + off)
                ep.twcc_arrival_us[ep.twcc_written & (TWCC_RING - 1)] = <int64_t>(self.now * 1e6)
                ep.twcc_written += 1
        st = ep.lookup(v.ssrc)
        if st is None:
            ep.unbound_packets += 1
            if slow is None:
                slow = []
            slow.append((KIND_RTP_UNBOUND, ep, PyBytes_FromStringAndSize(<char *>p, m), None, 0))
            return slow
        self._process(st, p, m, &v)
        return slow

    def inject(self, InStream st, bytes packet, double now):
        """Feed a plaintext RTP packet to `st` (the first packet of a newly bound SSRC)."""
        cdef RtpView v
        cdef int n = PyBytes_GET_SIZE(packet)
        cdef uint8_t buf[MAX_DGRAM]
        if n > MAX_DGRAM:
            return False
        memcpy(buf, PyBytes_AS_STRING(packet), n)
        if parse_rtp(buf, n, &v) < 0:
            self.drops[D_MALFORMED_RTP] += 1
            return False
        self.now = now
        self.injected += 1
        self._process(st, buf, n, &v)
        self._fan_out_batch()   # `buf` lives on this stack frame
        self.flush()
        return True

    cdef void _process(self, InStream st, uint8_t *p, int n, RtpView *v):
        """Book-keeping for one media packet of `st`, then fan it out."""
        cdef InStream media = st
        cdef int64_t ext_seq, ext_ts
        cdef int key
        cdef FanItem *item
        cdef uint16_t osn
        cdef double transit, d
        if st.media is not None:
            # RFC 4588 §4: RTX payload = OSN (2 bytes) + original payload.
            media = st.media
            st.packets += 1
            if v.payload_len <= 2:
                st.padding += 1
                self.drops[D_PADDING_ONLY] += 1
                return
            osn = rd16(p + v.payload_off)
            # Rebuild the original packet in place: header + original payload.
            memmove(p + v.payload_off, p + v.payload_off + 2, n - v.payload_off - 2)
            n -= 2   # any padding moved with the payload and still ends the packet
            wr16(p + 2, osn)
            wr32(p + 8, media.ssrc)
            p[1] = (p[1] & 0x80) | (media.payload_type & 0x7F)
            v.seq = osn
            v.ssrc = media.ssrc
            v.payload_len -= 2
            media.rtx_packets += 1
        if v.payload_len == 0:
            media.padding += 1
            self.drops[D_PADDING_ONLY] += 1
            if media.started:   # padding takes a sequence number: not a gap to NACK
                recvlog_add(&media.rlog, unwrap16(media.highest_seq, v.seq))
            return
        if not media.started:
            media.started = True
            media.highest_seq = SEQ_BASE + v.seq
            media.first_seq = media.highest_seq
            media.highest_ts = TS_BASE + v.ts
            media.frames = 1
            ext_seq = media.highest_seq
            ext_ts = media.highest_ts
        else:
            ext_seq = unwrap16(media.highest_seq, v.seq)
            ext_ts = unwrap32(media.highest_ts, v.ts)
            if ext_seq > <int64_t>media.highest_seq:
                media.highest_seq = ext_seq
            if ext_ts > <int64_t>media.highest_ts:
                media.highest_ts = ext_ts
                media.frames += 1            # a new, later RTP timestamp: a new frame (RFC 3550 §5.1)
        if _repair_receive(self, media, p, n, ext_seq, ext_ts) < 0:
            return   # a duplicate (counted in media.rlog): a packet reaches viewers exactly once
        media.packets += 1
        media.bytes += n
        if st is media and ext_seq == <int64_t>media.highest_seq:
            # RFC 3550 §6.4.1 / A.8: J += (|D| - J) / 16, from in-order original packets only.
            transit = self.now * media.clock_rate - <double>ext_ts
            if media.packets > 1:
                d = transit - media.last_transit
                media.jitter += ((d if d >= 0 else -d) - media.jitter) / 16.0
            media.last_transit = transit
        media.last_packet_at = self.now
        media.last_ts = v.ts
        key = 0
        if media.codec != C_AUDIO:
            key = sniff_keyframe(p + v.payload_off, v.payload_len, media.codec)
            if key:
                media.keyframes += 1
                media.last_keyframe_at = self.now
                media.last_keyframe_seq = ext_seq
                sniff_layer_info(&media.info, p + v.payload_off, v.payload_len, media.codec)
            if media.kfc != NULL:
                kfcache_add(media.kfc, p, n, ext_seq, ext_ts, key, self.now)
        if not media.outs:
            return
        # Fanned out with the rest of the receive batch (_fan_out_batch): borrowed references
        # and pointers into the receive buffer, valid until the batch is fanned out.
        if self.nfan >= BATCH:
            self._fan_out_batch()
        item = &self.fan[self.nfan]
        item.st = <PyObject *>media
        item.p = p
        item.n = n
        item.v = v[0]
        item.ext_seq = ext_seq
        item.ext_ts = ext_ts
        item.key = key
        self.nfan += 1

    cdef void _fan_out_batch(self):
        """Forward the batch's media stream by stream and, within a stream, subscriber by
        subscriber: each viewer's packets of the batch leave back to back (in arrival order), so
        `flush` can hand a frame's equal-size packets to the kernel as one GSO send."""
        cdef int i, j, m, count_items = self.nfan
        cdef int idx[BATCH]
        cdef Py_ssize_t k, count
        cdef InStream st
        cdef OutTrack o
        cdef FanItem *it
        cdef int gate
        cdef uint8_t done[BATCH]
        memset(done, 0, sizeof(done))
        self.nfan = 0
        for i in range(count_items):
            if done[i]:
                continue
            st = <InStream>self.fan[i].st
            m = 0
            for j in range(i, count_items):
                if not done[j] and self.fan[j].st == self.fan[i].st:
                    done[j] = 1
                    idx[m] = j
                    m += 1
            self.fwd_src = <void *>st
            count = PyList_GET_SIZE(st.outs)
            for k in range(count):
                o = <OutTrack>PyList_GET_ITEM(st.outs, k)
                for j in range(m):
                    it = &self.fan[idx[j]]
                    if o.lr.current != NULL or o.lr.pending != NULL:
                        gate = layer_gate(&o.lr, <void *>st, it.key)
                        if gate == 0:
                            continue
                        if gate == 2:   # the target layer's keyframe: switch here, re-based
                            o.rebase = True
                            o.need_keyframe = o.video
                            o.lr.pic_rebase = True
                    self._forward_one(o, it.p, it.n, &it.v, it.ext_seq, it.ext_ts, it.key)

    cdef void _forward_one(self, OutTrack o, const uint8_t *p, int n, RtpView *v, int64_t ext_seq,
                           int64_t ext_ts, int key):
        cdef Endpoint ep = o.ep
        cdef uint8_t *q
        cdef int out_len, hdr, i, end, eid, elen, w, ext_start, pad, body_len, nid
        cdef int64_t out_seq, out_ts
        cdef uint64_t tseq
        cdef int64_t tw_seq = -1
        cdef int two_byte
        cdef int body_off, red = 0, out_pt = o.payload_type
        if o.paused:
            o.odrops[O_PAUSED] += 1
            return
        if not ep.has_path or ep.tx is None:
            # Before the gate: a keyframe the viewer cannot receive must not open it.
            o.odrops[O_NO_PATH] += 1
            return
        if o.need_keyframe:
            if not key:
                o.odrops[O_WAIT_KEYFRAME] += 1
                o.keyframe_wanted = True
                return
            o.need_keyframe = False
            o.keyframe_wanted = False
        if o.rebase:
            o.rebase = False
            o.start_in_seq = ext_seq
            o.seq_offset = <int64_t>o.last_out_seq + 1 - ext_seq
            if o.has_out:
                o.ts_offset = <int64_t>o.last_out_ts + 1 + <int64_t>(
                    (self.now - o.last_out_at) * o.clock_rate if self.now > o.last_out_at else 0) - ext_ts
            else:
                o.ts_offset = <int64_t>o.last_out_ts - ext_ts
            align_timestamp(&o.lr, o.has_out, o.last_out_ts, &o.ts_offset, ext_ts, v.ts, o.clock_rate)
        elif ext_seq < <int64_t>o.start_in_seq:
            o.odrops[O_BEFORE_START] += 1
            return
        if self.npending >= SEND_BATCH:
            self.flush()
        q = self.sbuf + self.npending * OUT_CAPACITY
        out_seq = ext_seq + o.seq_offset
        out_ts = ext_ts + o.ts_offset
        # Fixed header (CSRCs dropped: the SFU is not a mixer), X bit set below if we write any.
        q[0] = 0x80
        q[1] = (0x80 if v.marker else 0) | (o.payload_type & 0x7F)
        wr16(q + 2, <uint16_t>(out_seq & 0xFFFF))
        wr32(q + 4, <uint32_t>(out_ts & 0xFFFFFFFF))
        wr32(q + 8, o.ssrc)
        hdr = 12
        # Header extensions (RFC 8285): rebuild with the viewer's ids; two-byte form if the source
        # used it (values over 16 bytes), else one-byte.
        two_byte = (v.ext_profile & 0xFFF0) == 0x1000
        ext_start = hdr
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
            # abs-send-time: 24-bit 6.18 fixed point seconds (webrtc.org experiments).
            tseq = <uint64_t>(self.now * 262144.0)
            if two_byte:
                q[w] = o.abs_send_time_id
                q[w + 1] = 3
                w += 2
            else:
                q[w] = (o.abs_send_time_id << 4) | 2
                w += 1
            q[w] = (tseq >> 16) & 0xFF
            q[w + 1] = (tseq >> 8) & 0xFF
            q[w + 2] = tseq & 0xFF
            w += 3
        if o.twcc_id:
            tseq = ep.twcc_next
            tw_seq = <int64_t>tseq
            ep.twcc_next += 1
            if two_byte:
                q[w] = o.twcc_id
                q[w + 1] = 2
                w += 2
            else:
                q[w] = (o.twcc_id << 4) | 1
                w += 1
            wr16(q + w, <uint16_t>(tseq & 0xFFFF))
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
        if o.src_red_pt >= 0:   # Opus RED (_repair.pxi): the viewer's RED PT, or the primary only
            red = _red_adjust(o, p, v, &body_off, &body_len, &out_pt)
            q[1] = (q[1] & 0x80) | (out_pt & 0x7F)
        if hdr + body_len + pad + 16 > OUT_CAPACITY:
            o.odrops[O_TOO_LARGE] += 1
            return
        memcpy(q + hdr, p + body_off, body_len + pad)
        if red == 1:
            red_rewrite_pts(q + hdr, body_len, o.src_payload_type, o.payload_type)
        if o.lr.codec == C_VP8 or o.lr.codec == C_VP9:
            rewrite_picture_ids(&o.lr, o.lr.codec, q + hdr, body_len)
        if pad:
            q[0] |= 0x20
        out_len = hdr + body_len + pad
        if o.rtx_on:   # how it was rewritten, for a resend from the layer's store (_resend.pxi)
            rtx_note(self, o, out_seq, out_ts, ext_ts, tw_seq, key)
        out_len = ep.tx.protect_rtp(q, out_len, OUT_CAPACITY, <uint64_t>(out_seq - SEQ_BASE) & INDEX_MASK)
        if out_len < 0:
            o.odrops[O_PROTECT_FAILED] += 1
            return
        if out_seq > <int64_t>o.last_out_seq or not o.has_out:
            o.last_out_seq = out_seq
        if out_ts > <int64_t>o.last_out_ts or not o.has_out:
            o.last_out_ts = out_ts
            o.last_out_at = self.now
            o.last_in_ts = v.ts
        o.has_out = True
        o.packets += 1
        o.bytes += body_len
        if key:
            o.keyframes_forwarded += 1
        self.siov[self.npending].iov_len = out_len
        memcpy(&self.saddrs[self.npending], &ep.path, ep.path_len)
        self.slocal[self.npending] = ep.path_local
        self.sendto_ep[self.npending] = <PyObject *>ep
        self.smsgs[self.npending].msg_hdr.msg_namelen = ep.path_len
        self.npending += 1
        ep.tx_packets += 1
        ep.tx_bytes += out_len
        self.forwarded += 1
        if tw_seq >= 0:
            if ep.sendlog == NULL:
                ep.sendlog = sendlog_new()
            if ep.sendlog != NULL:
                sendlog_record(ep.sendlog, tw_seq, self.now, out_len, 0)
        if v.marker and o.lr.pad_budget > 0 and out_seq == <int64_t>o.last_out_seq:
            emit_padding(self, o, ep, ext_seq)

    cpdef int flush(self):
        """Send every queued datagram: one sendmmsg per up to SEND_BATCH messages, where a run of
        datagrams to one address, all of one size but the last (shorter or equal), is a single
        UDP GSO message (UDP_SEGMENT; the kernel splits it). When the kernel refuses a GSO send
        (EINVAL: e.g. a segment larger than that route's MTU allows, an old kernel; EIO: no
        checksum offload on the route), the rest of this flush goes one datagram per message, the
        refusal is counted and that peer gets no GSO from then on; after GSO_MAX_REFUSALS
        refusals GSO is off for everyone."""
        cdef int sent, start = 0, rc, ng = 0, i, j, seg, namelen
        cdef size_t total, used
        cdef msghdr *h
        cdef cmsghdr *cm
        cdef uint8_t *ctl
        cdef int err
        if self.captured is not None:
            for sent in range(self.npending):
                self.captured.append(PyBytes_FromStringAndSize(<char *>(self.sbuf + sent * OUT_CAPACITY),
                                                               self.siov[sent].iov_len))
            self.datagrams_out += self.npending
            self.npending = 0
            return 0
        i = 0
        while i < self.npending:
            seg = <int>self.siov[i].iov_len
            namelen = self.smsgs[i].msg_hdr.msg_namelen
            j = i + 1
            if self.gso and not (<Endpoint>self.sendto_ep[i]).gso_refused:
                total = seg
                while (j < self.npending and j - i < GSO_MAX_SEGMENTS and <int>self.siov[j].iov_len <= seg
                       and total + self.siov[j].iov_len <= GSO_MAX_BYTES
                       and self.sendto_ep[j] == self.sendto_ep[i]):   # one peer: one path
                    total += self.siov[j].iov_len
                    j += 1
                    if <int>self.siov[j - 1].iov_len < seg:
                        break   # only the last segment may be shorter
            h = &self.gmsgs[ng].msg_hdr
            h.msg_name = &self.saddrs[i]
            h.msg_namelen = namelen
            h.msg_iov = &self.siov[i]
            h.msg_iovlen = j - i
            ctl = self.gctrl + ng * SEND_CTRL
            used = 0
            if j - i > 1:
                cm = <cmsghdr *>ctl
                cm.cmsg_len = CMSG_LEN(sizeof(uint16_t))
                cm.cmsg_level = SOL_UDP_
                cm.cmsg_type = UDP_SEGMENT_
                (<uint16_t *>CMSG_DATA(cm))[0] = <uint16_t>seg
                used = CMSG_SPACE(sizeof(uint16_t))
            if self.slocal[i]:   # one peer per run: one source address (see read_local)
                used += write_pktinfo(ctl + used, &self.laddrs[self.slocal[i]], self.family)
            h.msg_control = ctl if used else NULL
            h.msg_controllen = used
            self.gfirst[ng] = i
            self.gcount[ng] = j - i
            ng += 1
            i = j
        while start < ng:
            rc = sendmmsg(self.fd, &self.gmsgs[start], ng - start, 0)
            self.send_calls += 1
            if rc < 0:
                err = errno
                if err == EINTR:
                    continue
                if (err == EINVAL or err == ENETUNREACH) and self.slocal[self.gfirst[start]]:
                    # maybe not GSO but the source: an address gone from the host (IPv6: EINVAL,
                    # IPv4: ENETUNREACH). Sent without it, that tells which.
                    if self._send_without_source(&self.gmsgs[start].msg_hdr, self.gcount[start] > 1):
                        self._source_refused(self.gfirst[start], start + 1, ng)
                        self.bytes_out += self.gmsgs[start].msg_len
                        self.datagrams_out += self.gcount[start]
                        if self.gcount[start] > 1:
                            self.gso_sends += 1
                            self.gso_segments += self.gcount[start]
                        start += 1
                        continue
                    err = errno
                if self.gcount[start] > 1 and (err == EIO or err == EINVAL or err == ENOPROTOOPT):
                    # this path takes no GSO (its MTU, no offload, an old kernel): plain from now
                    # on for this peer, for everyone after GSO_MAX_REFUSALS; the rest of this
                    # flush goes plain
                    (<Endpoint>self.sendto_ep[self.gfirst[start]]).gso_refused = True
                    self.gso_failures += 1
                    if self.gso_failures >= GSO_MAX_REFUSALS:
                        self.gso = False
                    self._send_plain(self.gfirst[start], self.npending - self.gfirst[start])
                    break
                # EAGAIN / ENOBUFS / unreachable: the first message failed; drop it, counted.
                self.drops[D_SEND_FAILED] += self.gcount[start]
                start += 1
                continue
            for sent in range(start, start + rc):
                self.bytes_out += self.gmsgs[sent].msg_len
                self.datagrams_out += self.gcount[sent]
                if self.gcount[sent] > 1:
                    self.gso_sends += 1
                    self.gso_segments += self.gcount[sent]
            start += rc
        sent = self.npending
        self.npending = 0
        return sent

    cdef bint _send_without_source(self, msghdr *h, bint gso) noexcept:
        """Send one queued message again without its IP_PKTINFO / IPV6_PKTINFO (keeping its
        UDP_SEGMENT, written first); its length goes to the mmsghdr's msg_len. False (the message
        as it was) when the kernel refuses this too."""
        cdef void *control = h.msg_control
        cdef size_t controllen = h.msg_controllen
        cdef ssize_t rc
        if gso:
            h.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
        else:
            h.msg_control = NULL
            h.msg_controllen = 0
        rc = sendmsg(self.fd, h, 0)
        if rc < 0:
            h.msg_control = control
            h.msg_controllen = controllen
            return False
        (<mmsghdr *>h).msg_len = <unsigned int>rc
        return True

    cdef void _source_refused(self, int first, int gstart, int gend):
        """The kernel refused to send queued datagram `first` from its source address but sent it
        without (EINVAL for IPv6, ENETUNREACH for IPv4: the address is no longer the host's). Its
        peer's traffic leaves from wherever the kernel picks from now on (until a datagram arrives
        on another address); its queued datagrams lose the source address, in the per-datagram
        messages and in GSO messages gstart..gend-1 (whose UDP_SEGMENT, written first, stays)."""
        cdef PyObject *ep = self.sendto_ep[first]
        cdef int i
        (<Endpoint>ep).path_local = 0
        self.source_refused += 1
        for i in range(first, self.npending):
            if self.sendto_ep[i] == ep:
                self.slocal[i] = 0
                self.smsgs[i].msg_hdr.msg_control = NULL
                self.smsgs[i].msg_hdr.msg_controllen = 0
        for i in range(gstart, gend):
            if self.sendto_ep[self.gfirst[i]] == ep:
                if self.gcount[i] > 1:
                    self.gmsgs[i].msg_hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
                else:
                    self.gmsgs[i].msg_hdr.msg_control = NULL
                    self.gmsgs[i].msg_hdr.msg_controllen = 0

    cdef void _send_plain(self, int first, int count):
        """Send queued datagrams first..first+count-1 one per message (the GSO fallback)."""
        cdef int start = first, end = first + count, rc, i
        cdef msghdr *h
        for i in range(first, end):
            h = &self.smsgs[i].msg_hdr
            if self.slocal[i]:
                h.msg_control = self.pctrl + i * PKTINFO_CTRL
                h.msg_controllen = write_pktinfo(self.pctrl + i * PKTINFO_CTRL, &self.laddrs[self.slocal[i]],
                                                 self.family)
            else:
                h.msg_control = NULL
                h.msg_controllen = 0
        while start < end:
            rc = sendmmsg(self.fd, &self.smsgs[start], end - start, 0)
            self.send_calls += 1
            if rc < 0:
                if errno == EINTR:
                    continue
                if ((errno == EINVAL or errno == ENETUNREACH) and self.slocal[start]
                        and self._send_without_source(&self.smsgs[start].msg_hdr, False)):
                    self._source_refused(start, 0, 0)
                    self.bytes_out += self.smsgs[start].msg_len
                    self.datagrams_out += 1
                    start += 1
                    continue
                self.drops[D_SEND_FAILED] += 1
                start += 1
                continue
            for i in range(start, start + rc):
                self.bytes_out += self.smsgs[i].msg_len
            self.datagrams_out += rc
            start += rc


def sniff_keyframe_py(bytes payload, int codec) -> bool:
    """Python access to the keyframe sniffer (tests, the slow path)."""
    return bool(sniff_keyframe(<const uint8_t *>PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), codec))
