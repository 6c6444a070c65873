"""Fuzz target: the Router's receive path in the Cython fast path (sfu/_fastpath.pyx and its .pxi):
datagram classification and demultiplexing (RFC 7983 first byte, address table), SRTP / SRTCP
unprotect, the RTP header and RFC 8285 extension parsers, RTX unwrapping, the keyframe and layer
sniffers (VP8, VP9, H.264, AV1), the received bitmap, keyframe cache, RED, the rewrite and fan-out
to a viewer, NACK resends, layer switches and padding probes.

The input is a program: each step sends one datagram over loopback UDP to the Router's socket
(raw bytes; fuzzed plaintext RTP or RTCP protected under the publisher's real SRTP key, optionally
aimed at a bound SSRC; or raw bytes from an unknown address), injects a plaintext packet, or drives
the Python-facing calls the control plane makes on network input (resend for a viewer's NACK,
layer switch, cache replay, padding). Every run starts from a fresh Router and streams.
Crash: a process crash, or any exception out of the Router (its documented outcome for bad input is
a drop counter, never an exception); a datagram sent to the viewer that does not decrypt under the
viewer's key or is not a well-formed RTP packet (header, extensions, padding); RTCP that the Router hands to Python is parsed as the server
does (`RtcpError` is the only allowed error there).
Coverage: the C code is not instrumented; libFuzzer sees the harness's Python branches only.
"""

from __future__ import annotations

import select
import socket

from _common import Reader, instrumented, main

with instrumented(__name__):
    from sfu import _fastpath as fp
    from sfu.wire import rtcp

KEY = bytes(range(16))
SALT = bytes(range(12))
PROFILE = fp.SRTP_AEAD_AES_128_GCM
TWCC_ID = 3
# (ssrc, codec, payload type, clock): a two-layer VP8 simulcast, VP9, H.264, AV1, Opus
STREAMS = [
    (0x1001, fp.CODEC_VP8, 96, 90000),
    (0x1002, fp.CODEC_VP8, 96, 90000),
    (0x2001, fp.CODEC_VP9, 98, 90000),
    (0x3001, fp.CODEC_H264, 102, 90000),
    (0x4001, fp.CODEC_AV1, 45, 90000),
    (0x5001, fp.CODEC_AUDIO, 111, 48000),
]
RTX_SSRC, RTX_PT = 0x1101, 97  # RTX of the low VP8 layer
SSRCS = [s[0] for s in STREAMS] + [RTX_SSRC]


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


SERVER = _udp()
SERVER.setblocking(False)
PUBLISHER = _udp()
STRANGER = _udp()


def _ctx() -> fp.SrtpContext:
    return fp.SrtpContext(PROFILE, KEY, SALT)


class Scene:
    """One Router, a publisher endpoint with every kind of stream bound, one viewer subscribed."""

    def __init__(self) -> None:
        self.router = fp.Router(SERVER.fileno(), socket.AF_INET)
        self.router.capture(True)
        self.pub = fp.Endpoint()
        self.pub.set_srtp(_ctx(), _ctx())
        self.pub.set_transport_cc(TWCC_ID)
        self.router.map_address(PUBLISHER.getsockname(), self.pub)
        self.sender = _ctx()  # the publisher's side of its SRTP association
        self.streams = []
        for ssrc, codec, pt, clock in STREAMS:
            st = fp.InStream(None, ssrc, codec, pt, clock)
            self.pub.bind(ssrc, st)
            self.streams.append(st)
        self.streams[1].enable_keyframe_cache(True)
        rtx = fp.InStream(None, RTX_SSRC, fp.CODEC_VP8, RTX_PT, 90000)
        rtx.set_rtx_of(self.streams[0])
        self.pub.bind(RTX_SSRC, rtx)
        self.viewer = fp.Endpoint()
        self.viewer.set_srtp(_ctx(), _ctx())
        self.router.set_path(self.viewer, ("127.0.0.1", 9))
        self.viewer_rx = _ctx()  # the viewer's side: every datagram sent to it must decrypt and parse
        self.outs = []
        for i, (_ssrc, codec, pt, clock) in enumerate(STREAMS):
            if i == 1:
                continue  # the high layer reaches the viewer by a switch
            out = fp.OutTrack(self.viewer, 0xA000 + i, pt, clock, codec != fp.CODEC_AUDIO, 1000 * i, 5000 * i)
            out.twcc_id = 5
            out.abs_send_time_id = 4
            out.map_extension(TWCC_ID, 5)
            out.map_extension(2, 7)
            out.enable_retransmissions()
            if codec == fp.CODEC_VP8:
                out.set_rtx(0xB000, 99, 300)
            out.set_retransmission_policy(1e9, 1e9, 0.0)
            out.rtx_tokens = 1e9
            if codec == fp.CODEC_AUDIO:
                out.set_red(63, 63, 111)
            self.streams[i].add(out)
            if codec != fp.CODEC_AUDIO:
                fp.set_source(out, self.streams[i])
            self.outs.append(out)
        self.streams[1].add(self.outs[0])
        self.now = 1.0

    def deliver(self, sock: socket.socket, datagram: bytes) -> None:
        expected = self.router.datagrams_in + 1
        sock.sendto(datagram, SERVER.getsockname())
        while self.router.datagrams_in < expected:
            if not select.select([SERVER], [], [], 5.0)[0]:
                raise AssertionError("a loopback datagram did not arrive")
            self.handle(self.router.on_readable(self.now))

    def sent(self) -> None:
        """The viewer's datagrams: valid SRTP (a byte-identical resend is a replay) and valid RTP."""
        for datagram in self.router.take_captured():
            try:
                plain = self.viewer_rx.unprotect(datagram)
            except fp.SrtpError as exc:
                assert exc.code == fp.SRTP_ERR_REPLAY, f"viewer datagram does not decrypt: {exc}"
                continue
            check_rtp(plain)

    def handle(self, slow: list | None) -> None:
        """What the Python side does with the Router's slow-path datagrams (the parsing part)."""
        for kind, _ep, data, *_rest in slow or ():  # (kind, endpoint, bytes, address, ...)
            if kind == fp.KIND_RTCP:
                try:
                    rtcp.parse_compound(data)
                except rtcp.RtcpError:
                    pass
            elif kind == fp.KIND_LOSS:
                for st in self.router.take_loss_events():
                    gaps, _overflow = st.take_gaps()
                    for first, count in gaps[:4]:
                        st.missing(list(range(first, first + min(count, 64))))


def check_rtp(plain: bytes) -> None:
    """RFC 3550 §5.1 / RFC 8285 shape of a packet the Router sent: header, CSRCs, extension block
    and padding inside the packet, padding count not zero."""
    assert len(plain) >= 12 and plain[0] >> 6 == 2, plain.hex()
    off = 12 + 4 * (plain[0] & 0x0F)
    if plain[0] & 0x10:
        assert off + 4 <= len(plain), plain.hex()
        off += 4 + 4 * int.from_bytes(plain[off + 2 : off + 4], "big")
    assert off <= len(plain), plain.hex()
    if plain[0] & 0x20:
        assert 0 < plain[-1] <= len(plain) - off, f"bad RTP padding count {plain[-1]}: {plain.hex()}"


def _aim(packet: bytes, op: int) -> bytes:
    """Make a fuzzed packet an RTP version-2 packet of one bound SSRC (op says which)."""
    if len(packet) < 12:
        return packet
    b = bytearray(packet)
    b[0] = (b[0] & 0x3F) | 0x80
    if 192 <= b[1] <= 223:  # RFC 5761 §4: these would be RTCP packet types
        b[1] &= 0x7F
    b[8:12] = SSRCS[(op >> 4) % len(SSRCS)].to_bytes(4, "big")
    return bytes(b)


def check(data: bytes) -> None:
    r = Reader(data)
    s = Scene()
    steps = 0
    while r.left() and steps < 64:
        steps += 1
        op = r.byte()
        s.now += r.byte() / 500
        kind = op & 7
        if kind == 0:
            s.deliver(PUBLISHER, r.chunk() or b"\x80")
        elif kind == 1:
            plain = r.chunk()
            if op & 8:
                plain = _aim(plain, op)
            try:
                wire = s.sender.protect(plain)
            except fp.SrtpError:
                wire = plain or b"\x80"
            s.deliver(PUBLISHER, wire)
        elif kind == 2:
            plain = r.chunk()
            try:
                wire = s.sender.protect_rtcp_packet(plain)
            except fp.SrtpError:
                wire = plain or b"\x80"
            s.deliver(PUBLISHER, wire)
        elif kind == 3:
            s.deliver(STRANGER, r.chunk() or b"\x00")
        elif kind == 4:
            st = s.streams[(op >> 4) % len(s.streams)]
            plain = r.chunk()
            s.router.inject(st, _aim(plain, op) if op & 8 else plain, s.now)
            s.handle([(fp.KIND_LOSS, None, b"", None)] if s.router.take_loss_events() else None)
        elif kind == 5:
            out = s.outs[(op >> 4) % len(s.outs)]
            seqs = [r.u16() for _ in range(r.byte() % 40)]
            s.router.resend(out, seqs, s.now)
        elif kind == 6:
            target = s.streams[(op >> 4) & 1]
            fp.switch_source(s.outs[0], target, r.u32() if op & 8 else None)
            s.router.replay_cache(s.streams[1], s.outs[0], s.now)
        else:
            out = s.outs[(op >> 4) % len(s.outs)]
            if op & 8:
                out.request_rebase(bool(op & 0x80))
            else:
                fp.add_padding(out, r.u16(), bool(op & 0x80))
        s.sent()
    s.handle(s.router.on_readable(s.now))
    s.sent()


if __name__ == "__main__":
    main(check)
