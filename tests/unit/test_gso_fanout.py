"""Batched fan-out and UDP GSO on real loopback sockets.

A publisher socket sends a burst (frames of equal-size packets, the last of each frame shorter, plus
audio) to a Router's socket; two viewers each get the stream. Whatever way `flush` sends them (GSO
runs, per-datagram messages, or the fallback after the kernel refuses GSO), every viewer must
receive separate datagrams, one per source packet, in source order, each a valid SRTP packet
carrying the source payload.
"""

from __future__ import annotations

import select
import socket
import struct

import pytest

from sfu import _fastpath

KEY16 = bytes(range(16))
SALT12 = bytes(range(12))
SO_NO_CHECK = 11  # Linux: no UDP checksum on send -> the kernel refuses GSO with EINVAL
VIDEO_PT, AUDIO_PT = 96, 111
VIDEO_SSRC, AUDIO_SSRC = 0x1111, 0x2222


def _ctx() -> _fastpath.SrtpContext:
    return _fastpath.SrtpContext(_fastpath.SRTP_AEAD_AES_128_GCM, KEY16, SALT12)


def _vp8(key: bool, start: bool, size: int, tag: int) -> bytes:
    descriptor = bytes([0x10 if start else 0x00])
    header = bytes([0x00 if key else 0x01, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) if start and key else b""
    tail = struct.pack("!I", tag)  # the tag ends the payload
    return descriptor + header + bytes(size - len(descriptor) - len(header) - len(tail)) + tail


def _rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, ts, ssrc) + payload


def _udp(no_check: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    if no_check:
        sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    sock.settimeout(2.0)
    return sock


def _drain(sock: socket.socket, expected: int) -> list[bytes]:
    got = []
    while len(got) < expected:
        try:
            got.append(sock.recv(4096))
        except TimeoutError:
            break
    sock.setblocking(False)
    try:
        while True:  # nothing more may arrive than was sent
            got.append(sock.recv(4096))
    except BlockingIOError:
        pass
    return got


@pytest.mark.parametrize("mode", ["gso", "plain", "refused"])
def test_burst_reaches_every_viewer_as_separate_datagrams_in_order(mode):
    server = _udp(no_check=mode == "refused")
    server.setblocking(False)
    router = _fastpath.Router(server.fileno(), socket.AF_INET, gso=mode != "plain")
    publisher_sock = _udp()
    pub = _fastpath.Endpoint()
    pub.set_srtp(_ctx(), _ctx())
    router.map_address(publisher_sock.getsockname(), pub)
    video = _fastpath.InStream(None, VIDEO_SSRC, _fastpath.CODEC_VP8, VIDEO_PT, 90000)
    audio = _fastpath.InStream(None, AUDIO_SSRC, _fastpath.CODEC_AUDIO, AUDIO_PT, 48000)
    pub.bind(VIDEO_SSRC, video)
    pub.bind(AUDIO_SSRC, audio)
    viewers = []
    endpoints = []
    for i in range(2):
        sock = _udp()
        ep = _fastpath.Endpoint()
        ep.set_srtp(_ctx(), _ctx())
        router.set_path(ep, sock.getsockname())
        v_out = _fastpath.OutTrack(ep, 0xA000 + i, VIDEO_PT, 90000, True, 100, 1000)
        a_out = _fastpath.OutTrack(ep, 0xB000 + i, AUDIO_PT, 48000, False, 200, 2000)
        video.add(v_out)
        audio.add(a_out)
        viewers.append((sock, _ctx()))
        endpoints.append(ep)
    sender = _ctx()
    seq, ts, audio_seq = 1000, 90000, 50
    # the kernel refuses every GSO send on a SO_NO_CHECK socket: a refused flush is resent plain
    # and that viewer gets no GSO from then on (one refusal per viewer; the others keep GSO until
    # they are refused too); a third round then goes plain from the start
    rounds = 3 if mode == "refused" else 1
    for round_ in range(rounds):
        sent_tags = []
        for frame in range(4):  # 4 frames x 5 packets: 4 of 1100 bytes then a shorter one
            for i in range(5):
                tag = round_ * 1000 + frame * 10 + i
                payload = _vp8(key=round_ == 0 and frame == 0, start=i == 0, size=1100 if i < 4 else 500, tag=tag)
                publisher_sock.sendto(sender.protect(_rtp(VIDEO_PT, seq, ts, VIDEO_SSRC, payload, i == 4)),
                                      server.getsockname())
                sent_tags.append(("v", tag))
                seq += 1
            tag = 900_000 + round_ * 10 + frame
            publisher_sock.sendto(sender.protect(_rtp(AUDIO_PT, audio_seq, 960 * audio_seq, AUDIO_SSRC,
                                                      b"\xfc" + bytes(60) + struct.pack("!I", tag), False)),
                                  server.getsockname())
            sent_tags.append(("a", tag))
            audio_seq += 1
            ts += 3000
        expected_in = router.datagrams_in + len(sent_tags)
        while router.datagrams_in < expected_in:
            assert select.select([server], [], [], 2.0)[0], "publisher datagrams did not arrive"
            router.on_readable(1.0 + round_)
        assert router.drop_counts["send-failed"] == 0
        for sock, rx in viewers:
            datagrams = _drain(sock, len(sent_tags))
            assert len(datagrams) == len(sent_tags)
            tags = []
            for d in datagrams:
                plain = rx.unprotect(d)
                kind = "v" if plain[1] & 0x7F == VIDEO_PT else "a"
                tags.append((kind, struct.unpack("!I", plain[-4:])[0]))
            assert [t for t in tags if t[0] == "v"] == [t for t in sent_tags if t[0] == "v"]
            assert [t for t in tags if t[0] == "a"] == [t for t in sent_tags if t[0] == "a"]
            sock.setblocking(True)
            sock.settimeout(2.0)
    if mode == "gso":
        assert router.gso and router.gso_sends > 0 and router.gso_segments >= 8
    elif mode == "plain":
        assert router.gso_sends == 0
    else:
        assert router.gso_failures == 2 and router.gso_sends == 0
        assert all(ep.gso_refused for ep in endpoints)
        assert router.gso  # still on for peers whose paths take it
    for sock in [server, publisher_sock, *(v[0] for v in viewers)]:
        sock.close()
