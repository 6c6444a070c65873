"""Typed surface of the Cython fast path (`sfu/_fastpath.pyx`, `_srtp.pxi`).

Only what Python calls is listed; the per-packet `cdef` methods are C-only.
"""

from collections.abc import Iterable
from typing import Any

# ---- SRTP (_srtp.pxi) -------------------------------------------------------------------------
SRTP_AES128_CM_SHA1_80: int
SRTP_AEAD_AES_128_GCM: int
SRTP_ERR_SHORT: int
SRTP_ERR_AUTH: int
SRTP_ERR_REPLAY: int
SRTP_ERR_CAPACITY: int
SRTP_ERR_CRYPTO: int
SRTP_REPLAY_WINDOW: int

class SrtpError(Exception):
    code: int
    reason: str

class SrtpContext:
    """One direction (protect or unprotect) of SRTP + SRTCP for one DTLS-SRTP association."""

    profile: int
    protected: int
    unprotected: int
    auth_failures: int
    replays: int
    def __init__(self, profile: int, master_key: bytes, master_salt: bytes) -> None: ...
    def protect(self, packet: bytes) -> bytes: ...
    def unprotect(self, packet: bytes) -> bytes: ...
    def protect_rtcp_packet(self, packet: bytes) -> bytes: ...
    def unprotect_rtcp_packet(self, packet: bytes) -> bytes: ...

def srtp_overhead(profile: int) -> int: ...
def srtp_key_lengths(profile: int) -> tuple[int, int]: ...

# ---- forwarding (_fastpath.pyx) ---------------------------------------------------------------
CODEC_AUDIO: int
CODEC_VP8: int
CODEC_VP9: int
CODEC_H264: int
CODEC_AV1: int
KIND_STUN: str
KIND_DTLS: str
KIND_RTCP: str
KIND_RTP_UNBOUND: str
DROP_REASONS: tuple[str, ...]
OUT_DROP_REASONS: tuple[str, ...]
TWCC_RING: int

Address = tuple[Any, ...]

class Endpoint:
    """SRTP contexts, selected remote address and bound incoming SSRCs of one peer."""

    owner: Any
    twcc_next: int
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    rtcp_in: int
    rtcp_out: int
    srtp_auth_failures: int
    gso_refused: bool  # the kernel refused a GSO send to this path: plain sends only
    unbound_packets: int
    twcc_written: int
    twcc_read: int
    def __init__(self, owner: Any = None) -> None: ...
    @property
    def ready(self) -> bool: ...
    def set_srtp(self, rx: SrtpContext, tx: SrtpContext) -> None: ...
    def set_transport_cc(self, ext_id: int) -> None: ...
    def bind(self, ssrc: int, stream: InStream) -> None: ...
    def unbind_all(self) -> None: ...
    def take_twcc(self) -> list[tuple[int, int]]: ...
    def protect_rtcp(self, packet: bytes) -> bytes: ...
    def protect_rtp(self, packet: bytes) -> bytes: ...

class InStream:
    """One incoming SSRC: unwrap state, keyframe sniffing, its subscribers."""

    owner: Any
    ssrc: int
    codec: int
    payload_type: int
    clock_rate: int
    started: bool
    highest_seq: int
    first_seq: int
    highest_ts: int
    packets: int
    bytes: int
    keyframes: int
    padding: int
    rtx_packets: int
    frames: int  # packets that advanced the highest RTP timestamp (video: frames)
    last_packet_at: float
    last_keyframe_at: float
    jitter: float
    last_ts: int
    def __init__(self, owner: Any = None, ssrc: int = 0, codec: int = 0, payload_type: int = 0, clock_rate: int = 90000) -> None: ...
    def set_rtx_of(self, media: InStream) -> None: ...
    @property
    def subscribers(self) -> list[OutTrack]: ...
    def add(self, out: OutTrack) -> None: ...
    def remove(self, out: OutTrack) -> None: ...
    @property
    def expected(self) -> int: ...
    # loss repair (_repair.pxi)
    last_keyframe_seq: int
    cache_hits: int
    cache_misses: int
    cache_packets_replayed: int
    def enable_keyframe_cache(self, on: bool = True) -> None: ...
    @property
    def keyframe_cache(self) -> tuple[int, int, float, bool] | None: ...
    @property
    def keyframe_cache_sizing(self) -> tuple[int, float | None, float] | None: ...
    def take_gaps(self) -> tuple[list[tuple[int, int]], bool]: ...
    def missing(self, seqs: list[int]) -> list[int]: ...
    def packet_state(self, ext_seq: int) -> int: ...
    @property
    def repair_counts(self) -> dict[str, int]: ...
    @property
    def retransmission_store(self) -> tuple[int, int] | None:
        """(packets stored, arena bytes) of the layer's retransmission store (_resend.pxi), if any."""
        ...

class OutTrack:
    """Rewrite state of one subscription (one viewer, one track)."""

    owner: Any
    ssrc: int
    payload_type: int
    clock_rate: int
    twcc_id: int
    abs_send_time_id: int
    video: bool
    need_keyframe: bool
    paused: bool
    has_out: bool
    last_out_seq: int
    last_out_ts: int
    last_out_at: float
    packets: int
    bytes: int
    keyframes_forwarded: int
    last_in_ts: int
    keyframe_wanted: bool
    def __init__(self, ep: Endpoint, ssrc: int, payload_type: int, clock_rate: int, video: bool,
                 initial_seq: int = 0, initial_ts: int = 0, owner: Any = None) -> None: ...
    def map_extension(self, source_id: int, viewer_id: int) -> None: ...
    def clear_extensions(self) -> None: ...
    def request_rebase(self, need_keyframe: bool = True) -> None: ...
    @property
    def drops(self) -> dict[str, int]: ...
    @property
    def endpoint(self) -> Endpoint: ...
    @property
    def seq_offset(self) -> int: ...
    @property
    def ts_offset(self) -> int: ...
    def out_timestamp_at(self, now: float) -> int: ...
    # loss repair (_repair.pxi)
    rtx_ssrc: int
    rtx_pt: int
    rtx_rate: float
    rtx_burst: float
    rtx_tokens: float
    rtx_min_interval: float
    keyframe_floor: int
    cache_replays: int
    src_red_pt: int
    red_pt: int
    src_payload_type: int
    def enable_retransmissions(self) -> None: ...
    def set_rtx(self, rtx_ssrc: int, rtx_payload_type: int, initial_seq: int = 0) -> None: ...
    def set_retransmission_policy(self, rate_bytes_per_s: float, burst_bytes: float, min_interval_s: float) -> None: ...
    def set_red(self, source_red_pt: int, viewer_red_pt: int, source_payload_type: int) -> None: ...
    @property
    def retransmissions(self) -> dict[str, int]: ...
    @property
    def retransmission_store(self) -> bool: ...
    @property
    def rewrite_epochs(self) -> int: ...

class Router:
    """The shared UDP socket's receive/forward/send loop and its address table."""

    datagrams_in: int
    datagrams_out: int
    bytes_in: int
    bytes_out: int
    send_calls: int
    wakeups: int
    forwarded: int
    injected: int
    gso: bool  # coalesce runs of equal-size datagrams to one address into UDP GSO sends
    gso_sends: int
    gso_segments: int
    gso_failures: int
    def __init__(self, fd: int, family: int, gso: bool = True) -> None: ...
    def map_address(self, addr: Address, ep: Endpoint) -> None: ...
    def unmap_address(self, addr: Address) -> None: ...
    def endpoint_for(self, addr: Address) -> Endpoint | None: ...
    @property
    def mapped_addresses(self) -> int: ...
    def set_path(self, ep: Endpoint, addr: Address | None) -> None: ...
    # local addresses: each datagram's destination (IP_PKTINFO / IPV6_PKTINFO), answered from
    locals_overflow: int
    source_refused: int  # sends the kernel refused from their source address (gone from the host)
    def note_arrival(self, addr: Address | None, local: int) -> None: ...
    def local_address(self, local: int) -> str | None: ...
    @property
    def local_addresses(self) -> list[str | None]: ...
    def path_local(self, ep: Endpoint) -> str | None: ...
    def sendto(self, data: bytes, addr: Address, local: int = -1) -> None: ...
    @property
    def drop_counts(self) -> dict[str, int]: ...
    def on_readable(self, now: float) -> list[tuple[str, Endpoint | None, bytes, Address | None, int]] | None: ...
    def inject(self, stream: InStream, packet: bytes, now: float) -> bool: ...
    def flush(self) -> int: ...
    # loss repair (_repair.pxi)
    def take_loss_events(self) -> list[InStream]: ...
    def resend(self, out: OutTrack, seqs: list[int], now: float) -> list[int]: ...
    def replay_cache(self, stream: InStream, out: OutTrack, now: float) -> int: ...
    def capture(self, on: bool = True) -> None: ...
    def take_captured(self) -> list[bytes]: ...

def sniff_keyframe_py(payload: bytes, codec: int) -> bool: ...

# ---- simulcast switching, send log, padding probes (_layers.pxi) ------------------------------
SEND_FLAG_PADDING: int

def layer_info(st: InStream) -> tuple[int, int, bytes, int]:
    """(width, height, H.264 SPS / AV1 payload bytes, copy count) seen at `st`'s keyframes."""
    ...
def set_source(o: OutTrack, st: InStream | None) -> None: ...
def switch_source(o: OutTrack, target: InStream, hint32: int | None = None) -> None: ...
def cancel_switch(o: OutTrack) -> None: ...
def is_current_source(o: OutTrack, st: InStream) -> bool: ...
def source_state(o: OutTrack) -> dict[str, int | bool]: ...
def add_padding(o: OutTrack, budget_bytes: int, reset: bool = False) -> None: ...
def sent_packets(ep: Endpoint, first: int, count: int) -> list[tuple[int, int, int] | None]:
    """(send_time_us, size, flags) per extended transport-wide sequence number, None if unknown."""
    ...

# ---- transport-cc feedback from viewers (_twcc.pxi) -------------------------------------------
class FeedbackSummary:
    """One RTCP compound's transport-cc feedback, summarised (see sfu/core/twcc.py FeedbackSummary)."""

    feedbacks: int
    malformed: int
    matched: int
    lost: int
    acked: int
    unknown: int
    duplicates: int
    acked_bytes: int
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

class FeedbackAggregator:
    """Parses, matches (against `endpoint`'s send log) and summarises one viewer's feedback."""

    feedbacks: int
    matched: int
    unknown: int
    duplicates: int
    malformed: int
    def __init__(self, endpoint: Endpoint) -> None: ...
    def feed(
        self, data: bytes, probe_start: float = ..., probe_end: float = ...
    ) -> tuple[FeedbackSummary | None, bytes | None]:
        """(summary of the compound's transport-cc packets or None, the other packets or None)."""
        ...

# ---- the estimator's windows (_estimator.pxi) -------------------------------------------------

class EstimatorWindows:
    """Per-burst part of a viewer's send-side estimate (sfu/core/bwe_reference.py is its twin)."""

    signal: int  # 0 normal, 1 overuse, 2 underuse
    acked_bps: float
    delivery_ratio: float
    loss_fraction: float
    trend: float
    threshold_ms: float
    bursts_held: tuple[int, int]
    def add(
        self, bursts: list[tuple[float, float, float, float, int, int]], continues: bool, matched: int, lost: int,
        now: float,
    ) -> bool: ...
    def clear_probe(self) -> None: ...

def record_sent(ep: Endpoint, now: float, size: int, flags: int = 0) -> int:
    """Log a send under the next transport-wide sequence number (tests, simulations)."""
    ...

# ---- loss repair, keyframe cache, RED (_repair.pxi) -------------------------------------------
KIND_LOSS: str
RTX_COUNTERS: tuple[str, ...]
KF_MAX_AGE_S: float
RTX_STORE_BYTES_VIDEO: int
RTX_STORE_SLOTS_VIDEO: int
RTX_MAX_AGE_S: float
KEYFRAME_CACHE_MAX_PACKETS: int
KEYFRAME_CACHE_MAX_BYTES: int
KEYFRAME_CACHE_INITIAL_BYTES: int
KF_AGE_FLOOR_S: float
KF_AGE_FACTOR_X: float

def red_primary_py(payload: bytes) -> bytes | None: ...
def red_rewrite_pts_py(payload: bytes, src_pt: int, dst_pt: int) -> bytes: ...

# ---- sfu bench's viewer sockets (_loadrx.pxi) ---------------------------------------------------
LOAD_EVENT_GAP: int
LOAD_EVENT_LATE: int

class LoadReceiver:
    """Many load viewers' UDP sockets in one epoll set; their RTP bookkeeping in C."""

    decrypt_every: int
    packets: int
    bytes: int
    decrypted: int
    decrypt_failures: int
    replayed: int
    recv_errors: int
    twcc_overflow: int
    wakeups: int
    def __init__(self, decrypt_every: int = 1) -> None: ...
    def fileno(self) -> int: ...
    def add(self, fd: int) -> int: ...
    def remove(self, slot: int) -> None: ...
    def set_media(
        self, slot: int, rx: SrtpContext, twcc_id: int, rtx_payload_types: Iterable[int], connected_ns: int
    ) -> None: ...
    def bind(
        self, slot: int, ssrc: int, clock: int, base: int, highest: int, received: int = 0, nbytes: int = 0,
        media_ssrc: int | None = None,
    ) -> bool: ...
    def is_bound(self, slot: int, ssrc: int) -> bool: ...
    def streams(self, slot: int) -> list[tuple[int, int, int, int, int, float, int, int]]: ...
    def first_rtp_ns(self, slot: int) -> int: ...
    def rtx_padding(self, slot: int) -> int: ...
    def add_twcc(self, slot: int, seq: int, arrival_us: int) -> None: ...
    def twcc_feedback(self, slot: int, sender_ssrc: int, media_ssrc: int, max_size: int = 1200) -> list[bytes]: ...
    def take_events(self) -> list[tuple[int, int, int, int, int]]: ...
    def take_hist(self) -> dict[int, int]: ...
    def drain(self, budget: int = 4096) -> list[tuple[int, bytes, tuple[str, int], int]] | None: ...
    def process(self, slot: int, data: bytes, arrival_ns: int) -> bool: ...

def load_hist_bucket(us: int) -> int: ...
