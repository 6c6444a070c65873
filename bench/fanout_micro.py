"""Fan-out cost per forwarded datagram on real loopback sockets: receive, unprotect, rewrite,
protect, `sendmmsg` (UDP GSO runs), with or without source addresses (IP_PKTINFO) on the socket.

One Router on a dual-stack `::` socket (as `sfu serve` binds by default), one publisher and
`viewers` viewer sockets on 127.0.0.1. Each round the publisher sends one video frame of
`PACKETS` SRTP packets (equal sizes, the last shorter) and the Router drains and forwards it to
every viewer; only `Router.on_readable` is timed. With `--pktinfo` the socket has
IPV6_RECVPKTINFO on, as the media port has: every datagram is received with its destination
address and every forwarded run is sent with an IPV6_PKTINFO control message (each viewer sends
one DTLS-looking datagram from its path first, which is where the router learns that path's local
address). Without it, no control message is added (the base commit's behaviour).

Prints ns per forwarded datagram over the rounds (median, 10th percentile and minimum: on a busy
host the low ones are the least disturbed by other processes) and the GSO sends seen. Runs on any commit
of the fast path (it uses only Router/Endpoint/InStream/OutTrack APIs older than this script).

Usage: `.venv/bin/python bench/fanout_micro.py [viewers] [rounds] [--pktinfo]`.
"""

from __future__ import annotations

import socket
import statistics
import struct
import sys
import time

from sfu import _fastpath

KEY16 = bytes(range(16))
SALT12 = bytes(range(12))
VIDEO_PT, VIDEO_SSRC = 96, 0x1111
PACKETS = 24  # one frame: 23 packets of 1100 bytes, then a shorter one
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)


def _ctx() -> _fastpath.SrtpContext:
    return _fastpath.SrtpContext(_fastpath.SRTP_AEAD_AES_128_GCM, KEY16, SALT12)


def _vp8(key: bool, start: bool, size: int) -> bytes:
    descriptor = bytes([0x10 if start else 0x00])
    header = bytes([0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) if start and key else b""
    return descriptor + header + bytes(size - len(descriptor) - len(header))


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--")]
    pktinfo = "--pktinfo" in argv
    viewers = int(args[0]) if args else 50
    rounds = int(args[1]) if len(args) > 1 else 300
    server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind(("::", 0))
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    server.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS, as the media port
    if pktinfo:
        server.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    server.setblocking(False)
    target = ("127.0.0.1", server.getsockname()[1])
    router = _fastpath.Router(server.fileno(), socket.AF_INET6, True)
    publisher = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    publisher.bind(("127.0.0.1", 0))
    pub = _fastpath.Endpoint()
    pub.set_srtp(_ctx(), _ctx())
    router.map_address(publisher.getsockname(), pub)
    video = _fastpath.InStream(None, VIDEO_SSRC, _fastpath.CODEC_VP8, VIDEO_PT, 90000)
    pub.bind(VIDEO_SSRC, video)
    socks, eps = [], []
    for i in range(viewers):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setblocking(False)
        ep = _fastpath.Endpoint()
        ep.set_srtp(_ctx(), _ctx())
        router.map_address(sock.getsockname(), ep)
        router.set_path(ep, sock.getsockname())
        video.add(_fastpath.OutTrack(ep, 0xA000 + i, VIDEO_PT, 90000, True, 100, 1000))
        sock.sendto(b"\x17" + bytes(40), target)  # DTLS range: the path's local address is noted
        socks.append(sock)
        eps.append(ep)
    time.sleep(0.05)
    router.on_readable(time.monotonic())
    sources = sorted({str(router.path_local(ep)) for ep in eps}) if hasattr(router, "path_local") else ["n/a"]
    sender = _ctx()
    seq, ts = 1000, 90000
    per_datagram: list[float] = []
    for round_ in range(rounds):
        for i in range(PACKETS):
            payload = _vp8(key=round_ == 0, start=i == 0, size=1100 if i < PACKETS - 1 else 500)
            rtp = struct.pack("!BBHII", 0x80, (0x80 if i == PACKETS - 1 else 0) | VIDEO_PT, seq & 0xFFFF, ts,
                              VIDEO_SSRC) + payload
            publisher.sendto(sender.protect(rtp), target)
            seq += 1
        ts += 3000
        before = router.datagrams_out
        t0 = time.perf_counter_ns()
        router.on_readable(time.monotonic())
        elapsed = time.perf_counter_ns() - t0
        out = router.datagrams_out - before
        if out and round_ > 0:  # round 0 opens the keyframe gates
            per_datagram.append(elapsed / out)
        for sock in socks:  # untimed: keep the viewers' buffers from filling
            try:
                while True:
                    sock.recv(2048)
            except BlockingIOError:
                pass
    drops = {k: v for k, v in router.drop_counts.items() if v}
    print(f"pktinfo={'on' if pktinfo else 'off'} viewers={viewers} rounds={rounds}: "
          f"{statistics.median(per_datagram):.1f} ns per forwarded datagram (median; p10 "
          f"{statistics.quantiles(per_datagram, n=10)[0]:.1f}, min {min(per_datagram):.1f}), "
          f"GSO sends {router.gso_sends}, segments {router.gso_segments}, drops {drops}, viewers' paths leave "
          f"from {sources}")


if __name__ == "__main__":
    main(sys.argv[1:])
