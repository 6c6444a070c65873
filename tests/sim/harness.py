"""The real fast path without sockets: a Router in capture mode, one publisher stream, viewers.

Packets go in with `Router.inject` (the same `_process` as received datagrams: received bitmap,
keyframe cache, fan-out, rewrite, retransmission ring, SRTP protect) and come out as protected
datagrams from `Router.take_captured`; a viewer-side SRTP context opens them again.
"""

from __future__ import annotations

import os
import socket
import struct

from sfu import _fastpath

PT_VP8 = 96
CLOCK = 90000
KEY = bytes(range(16))
SALT = bytes(range(12))


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = PT_VP8, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def vp8_payload(keyframe: bool, start: bool, size: int = 1000) -> bytes:
    """RFC 7741 descriptor (S bit on frame starts) + a payload header whose P bit says key/delta."""
    descriptor = bytes([0x10 if start else 0x00])
    header = bytes([0x00 if keyframe else 0x01]) if start else b"\x55"
    return descriptor + header + bytes(size - 2)


def parse(packet: bytes) -> tuple[int, int, int, int]:
    """(pt, seq, ts, ssrc) of a plaintext RTP packet."""
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", packet)
    return b1 & 0x7F, seq, ts, ssrc


class Forwarder:
    """One Router, one publisher InStream, any number of viewer OutTracks."""

    def __init__(self, keyframe_cache: bool = True) -> None:
        self.router = _fastpath.Router(-1, socket.AF_INET)
        self.router.capture(True)
        self.publisher = _fastpath.Endpoint()
        self.stream = _fastpath.InStream(None, 0x1111, _fastpath.CODEC_VP8, PT_VP8, CLOCK)
        if keyframe_cache:
            self.stream.enable_keyframe_cache(True)
        self.publisher.bind(0x1111, self.stream)
        self.viewers: list[tuple[_fastpath.OutTrack, _fastpath.SrtpContext]] = []

    def add_viewer(self, ssrc: int, nack: bool = True, rtx: tuple[int, int] | None = None,
                   connected: bool = True) -> tuple[_fastpath.OutTrack, _fastpath.SrtpContext]:
        ep = _fastpath.Endpoint()
        key = os.urandom(16)
        salt = os.urandom(12)
        profile = _fastpath.SRTP_AEAD_AES_128_GCM
        tx = _fastpath.SrtpContext(profile, key, salt)
        rx = _fastpath.SrtpContext(profile, key, salt)
        if connected:
            self.connect(ep, tx)
        out = _fastpath.OutTrack(ep, ssrc, PT_VP8, CLOCK, True, 1000, 5000)
        if nack:
            out.enable_retransmissions()
            if rtx is not None:
                out.set_rtx(rtx[0], rtx[1], 7000)
        self.stream.add(out)
        out.owner = (ep, tx)
        self.viewers.append((out, rx))
        return out, rx

    def connect(self, ep: _fastpath.Endpoint, tx: _fastpath.SrtpContext) -> None:
        ep.set_srtp(tx, tx)  # rx unused here
        self.router.set_path(ep, ("127.0.0.1", 9))

    def inject(self, packet: bytes, now: float) -> None:
        self.router.inject(self.stream, packet, now)

    def take(self) -> list[bytes]:
        return self.router.take_captured()
