"""Typed surface of the Cython fast path (`sfu/_fastpath.pyx`, `_srtp.pxi`).

Only what Python calls is listed; the per-packet `cdef` methods are C-only.
"""

from typing import Any

# ---- SRTP (_srtp.pxi) -------------------------------------------------------------------------
SRTP_AES128_CM_SHA1_80: int
SRTP_AEAD_AES_128_GCM: int
SRTP_ERR_SHORT: int
SRTP_ERR_AUTH: int
SRTP_ERR_REPLAY: int
SRTP_ERR_CAPACITY: int
SRTP_ERR_CRYPTO: int

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
    def __init__(self, fd: int, family: int) -> None: ...
    def map_address(self, addr: Address, ep: Endpoint) -> None: ...
    def unmap_address(self, addr: Address) -> None: ...
    def endpoint_for(self, addr: Address) -> Endpoint | None: ...
    @property
    def mapped_addresses(self) -> int: ...
    def set_path(self, ep: Endpoint, addr: Address | None) -> None: ...
    @property
    def drop_counts(self) -> dict[str, int]: ...
    def on_readable(self, now: float) -> list[tuple[str, Endpoint | None, bytes, Address | None]] | None: ...
    def inject(self, stream: InStream, packet: bytes, now: float) -> bool: ...
    def flush(self) -> int: ...

def sniff_keyframe_py(payload: bytes, codec: int) -> bool: ...
