"""A host with several addresses (issue 15, point 8): every answer leaves from the address the peer
sent it to.

The server binds its media socket to the wildcard address (the default) in a namespace shaped like
such a host (netns.TwoAddressNetns: loopback, and a link with a primary and a secondary IPv4 and IPv6
address). Left to itself the kernel sends from the address of the route back to the client, not
the one the client sent to, and ICE agents drop such answers (RFC 8445 §7.2.5.2.1); the router now
answers from the datagram's destination address (IP_PKTINFO / IPV6_PKTINFO).

- Packet-level clients bound to the primary address, the server advertising the secondary one (or
  127.0.0.1): every datagram they receive must come from the advertised address and port.
- Chromium with the suite's usual flags (nothing that changes ICE gathering: it gathers only the
  link's addresses, never loopback) against `--http-host 127.0.0.1 --public-ip 127.0.0.1`, the
  set-up of the issue: the viewer must connect and decode video.
"""
from __future__ import annotations

import sys
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from e2e_helpers import CHROMIUM_ARGS, VIDEO_DECODED, open_publisher, open_viewer, wait_for
from netns import TwoAddressNetns

import sfu
from sfu.testing import PacketPublisher, PacketViewer

FRAMES = 10
MEDIA_TIMEOUT_S = 15.0


@pytest.fixture
async def two_addresses() -> AsyncIterator[TwoAddressNetns]:
    async with TwoAddressNetns("pktinfo") as ns:
        yield ns


class _Recording:
    """Counts the source address of every datagram a packet-level client receives."""

    def _datagram(self, index: int, data: bytes, addr: tuple) -> None:
        self.sources[(addr[0], addr[1])] += 1
        super()._datagram(index, data, addr)  # type: ignore[misc]


class RecordingPublisher(_Recording, PacketPublisher):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sources: Counter[tuple[str, int]] = Counter()
        super().__init__(*args, **kwargs)


class RecordingViewer(_Recording, PacketViewer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sources: Counter[tuple[str, int]] = Counter()
        super().__init__(*args, **kwargs)


def _server_config(advertised: str, udp_ipv6: bool) -> sfu.Config:
    config = sfu.Config.for_tests()
    config.udp_host = "0.0.0.0"  # every address (with udp_ipv6: the dual-stack `::`)
    config.udp_ipv6 = udp_ipv6
    config.public_ips = [advertised]
    return config


@pytest.mark.parametrize(
    ("udp_ipv6", "client", "advertised"),
    [
        pytest.param(True, "v4[0]", "v4[1]", id="dual-stack-socket-ipv4-secondary"),
        pytest.param(False, "v4[0]", "v4[1]", id="ipv4-socket-ipv4-secondary"),
        pytest.param(True, "v4[0]", "127.0.0.1", id="dual-stack-socket-loopback-advertised"),
        pytest.param(False, "v4[0]", "127.0.0.1", id="ipv4-socket-loopback-advertised"),
        pytest.param(True, "v6[0]", "v6[1]", id="dual-stack-socket-ipv6-secondary"),
    ],
)
async def test_answers_and_media_leave_from_the_address_the_client_sent_to(two_addresses, udp_ipv6, client,
                                                                          advertised):
    ns = two_addresses

    def pick(name: str) -> str:
        return name if name[0].isdigit() else getattr(ns, name[:2])[int(name[3])]

    client_ip, advertised_ip = pick(client), pick(advertised)
    with ns.inside():
        async with sfu.Server(_server_config(advertised_ip, udp_ipv6)) as server:
            async with RecordingPublisher(server.whip_url("s"), server.mint_token("s", publish=True),
                                          local_addr=client_ip) as publisher, \
                    RecordingViewer(server.whep_url("s"), local_addr=client_ip) as viewer:
                await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= FRAMES, MEDIA_TIMEOUT_S)
                await publisher.wait_for(lambda: publisher.stats["receiver_reports"] >= 1, MEDIA_TIMEOUT_S)
                router = server.media.router
                path_locals = {router.path_local(s.peer.endpoint) for s in server.manager.sessions.values()}
                gso_sends = router.gso_sends
                refused = server.registry.get_sample_value("sfu_udp_source_address_total", {"event": "refused"})
            expected = {(advertised_ip, server.udp_port)}
    print(f"client {client_ip} -> {advertised_ip}: viewer got {dict(viewer.sources)}, publisher got "
          f"{dict(publisher.sources)}; paths leave from {path_locals}; GSO sends {gso_sends}")
    # STUN answers, DTLS, SRTP media (GSO batches too) and RTCP: all from where the client sent
    assert set(viewer.sources) == expected
    assert set(publisher.sources) == expected
    assert path_locals == {advertised_ip}
    assert refused == 0  # exported, and nothing refused: every source address was the host's


@pytest.mark.e2e
async def test_chromium_with_default_flags_watches_a_server_advertising_loopback(two_addresses, capsys):
    """The issue's set-up: `sfu serve --http-host 127.0.0.1 --public-ip 127.0.0.1` on a host that also
    has other addresses; Chromium on that host gathers only those, so its checks go from them to
    127.0.0.1, and the answers must come back from 127.0.0.1."""
    from playwright.async_api import async_playwright

    ns = two_addresses
    config = _server_config("127.0.0.1", udp_ipv6=True)
    config.http_host = "127.0.0.1"
    with ns.inside():
        async with sfu.Server(config) as server, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=ns.chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                ctx = await browser.new_context(permissions=["camera", "microphone"])
                publisher = await open_publisher(ctx, server, "multi", codec="VP8")
                viewer = await open_viewer(ctx, server, "multi")
                try:
                    stats = await wait_for(viewer, VIDEO_DECODED, what="decoded video", pages=[publisher])
                except AssertionError:
                    print(f"server: {server.stats()}", file=sys.stderr)
                    raise
                pair = stats["candidatePair"]
                router = server.media.router
                sessions = list(server.manager.sessions.values())
                paths = [s.peer.path for s in sessions]
                path_locals = {router.path_local(s.peer.endpoint) for s in sessions}
            finally:
                await browser.close()
    print(f"viewer's pair {pair}; server paths {paths}, leaving from {path_locals}")
    assert pair and "127.0.0.1" in pair["remote"]
    # the browser's own addresses (never loopback) reached the server's loopback address ...
    assert paths and all(p is not None and not p[0].startswith(("127.", "::ffff:127.")) for p in paths)
    # ... and everything went back from 127.0.0.1
    assert path_locals == {"127.0.0.1"}


@pytest.mark.parametrize(("ipv6", "gso_refused"), [(False, False), (True, False), (False, True)],
                         ids=["ipv4", "ipv6", "ipv4-gso-refused-too"])
async def test_a_source_address_gone_from_the_host_falls_back_to_the_kernels_choice(two_addresses, ipv6,
                                                                                   gso_refused):
    """The address a path's peer sent to is removed (a DHCP change, a moved secondary IP): the router
    must not lose the peer's media to EINVAL nor take the refusal for a GSO one (64 of those turn GSO
    off for everyone); it sends without the source address from then on, counted."""
    import select
    import socket
    import struct

    from netns import run

    from sfu import _fastpath
    from sfu.io import udp

    ns = two_addresses
    gone, prefix, ours = ("fd00:214::3", 64, ns.v6) if ipv6 else ("10.214.0.3", 24, ns.v4)
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    await run("ip", "-n", ns.ns, "addr", "add", f"{gone}/{prefix}", "dev", "eth0", *(["nodad"] if ipv6 else []))
    with ns.inside():
        server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        server.bind(("::", 0))
        server.setsockopt(socket.IPPROTO_IPV6, udp.IPV6_RECVPKTINFO, 1)
        if gso_refused:  # SO_NO_CHECK: the kernel refuses GSO too, the flush goes one by one
            server.setsockopt(socket.SOL_SOCKET, 11, 1)
        server.setblocking(False)
        client = socket.socket(family, socket.SOCK_DGRAM)
        client.bind((ours[0], 0))
        client.settimeout(2.0)
        publisher = socket.socket(family, socket.SOCK_DGRAM)
        publisher.bind((ours[0], 0))
    port = server.getsockname()[1]
    key = _fastpath.SRTP_AEAD_AES_128_GCM, bytes(range(16)), bytes(range(12))
    router = _fastpath.Router(server.fileno(), socket.AF_INET6, True)

    def drain(count: int) -> None:
        target = router.datagrams_in + count
        while router.datagrams_in < target:
            assert select.select([server], [], [], 2.0)[0], "datagrams did not arrive"
            router.on_readable(1.0)

    viewer = _fastpath.Endpoint()
    viewer.set_srtp(_fastpath.SrtpContext(*key), _fastpath.SrtpContext(*key))
    addr = client.getsockname()
    router.map_address(addr, viewer)
    router.set_path(viewer, addr)
    client.sendto(b"\x17" + bytes(20), (gone, port))  # DTLS to the third address: the path's source
    drain(1)
    assert router.path_local(viewer) == gone
    await run("ip", "-n", ns.ns, "addr", "del", f"{gone}/{prefix}", "dev", "eth0")

    pub = _fastpath.Endpoint()
    pub.set_srtp(_fastpath.SrtpContext(*key), _fastpath.SrtpContext(*key))
    router.map_address(publisher.getsockname(), pub)
    video = _fastpath.InStream(None, 0x1111, _fastpath.CODEC_VP8, 96, 90000)
    pub.bind(0x1111, video)
    video.add(_fastpath.OutTrack(viewer, 0xA000, 96, 90000, True, 100, 1000))
    sender = _fastpath.SrtpContext(*key)
    keyframe = bytes([0x10, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00])
    sizes = [700, 700, 700, 200]
    for i, size in enumerate(sizes):  # one keyframe: a GSO run of three and a shorter last packet
        header = struct.pack("!BBHII", 0x80, 96 | (0x80 if i == len(sizes) - 1 else 0), 10 + i, 9000, 0x1111)
        payload = ((keyframe if i == 0 else b"\x00") + bytes(size))[:size]
        publisher.sendto(sender.protect(header + payload), (ours[1], port))
    drain(len(sizes))
    router.sendto(b"from-python", addr)  # to the path: its source is unknown now, the kernel picks
    got = [client.recvfrom(2048) for _ in range(len(sizes) + 1)]
    sources = {a[0] for _, a in got}
    print(f"after {gone} left: {len(got)} datagrams from {sources}; source_refused {router.source_refused}, "
          f"gso sends {router.gso_sends}, gso failures {router.gso_failures}")
    assert gone not in sources and got[-1][0] == b"from-python"
    assert router.source_refused == 1 and router.path_local(viewer) is None
    assert router.drop_counts["send-failed"] == 0
    # a refused source is not taken for a refused GSO send, nor the other way round
    assert (router.gso_failures, router.gso_sends) == ((1, 0) if gso_refused else (0, 1))
    for sock in (server, client, publisher):
        sock.close()
