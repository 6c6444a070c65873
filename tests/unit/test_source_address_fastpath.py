"""The router answers from the local address each datagram arrived on (IP_PKTINFO / IPV6_PKTINFO).

Real loopback sockets, no namespace: all of 127.0.0.0/8 is local on Linux, so a client bound to
127.0.0.1 that sends to 127.0.0.2 is a client reaching a host's second address; left to itself the
kernel answers from 127.0.0.1 (the route back). The server socket is on the wildcard address, IPv4
(IP_PKTINFO) or dual-stack (IPV6_RECVPKTINFO, IPv4-mapped peers), as `MediaPort` sets it up.
"""

from __future__ import annotations

import socket
import struct

import pytest

from sfu import _fastpath
from sfu.io import udp

KEY16 = bytes(range(16))
SALT12 = bytes(range(12))
VIDEO_PT, VIDEO_SSRC = 96, 0x1111
DTLS_LIKE = b"\x17" + bytes(20)  # RFC 7983: 20-63 is DTLS
STUN_LIKE = b"\x00\x01" + bytes(18)


def _ctx() -> _fastpath.SrtpContext:
    return _fastpath.SrtpContext(_fastpath.SRTP_AEAD_AES_128_GCM, KEY16, SALT12)


def _server(family: int, pktinfo: bool = True, no_check: bool = False) -> socket.socket:
    if family == socket.AF_INET6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        if pktinfo:
            sock.setsockopt(socket.IPPROTO_IPV6, udp.IPV6_RECVPKTINFO, 1)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", 0))
        if pktinfo:
            sock.setsockopt(socket.IPPROTO_IP, udp.IP_PKTINFO, 1)
    if no_check:
        sock.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK: the kernel refuses GSO sends
    sock.setblocking(False)
    return sock


def _client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


def _readable(router: _fastpath.Router, sock: socket.socket, count: int) -> list[tuple]:
    """Drain until `count` datagrams have come in; return what the router handed back."""
    import select

    slow: list[tuple] = []
    target = router.datagrams_in + count
    while router.datagrams_in < target:
        assert select.select([sock], [], [], 2.0)[0], "datagrams did not arrive"
        slow.extend(router.on_readable(1.0) or [])
    return slow


def _receive_all(sock: socket.socket, count: int) -> list[tuple[bytes, str]]:
    return [(data, addr[0]) for data, addr in (sock.recvfrom(4096) for _ in range(count))]


def _publish_frame(router: _fastpath.Router, server: socket.socket, viewer: _fastpath.Endpoint, sizes: list[int]) -> None:
    """A publisher on 127.0.0.1 sends one VP8 keyframe (one packet per size) through the socket; the
    router forwards it to `viewer` in one flush (equal sizes then a shorter one: a GSO run)."""
    publisher = _client()
    pub = _fastpath.Endpoint()
    pub.set_srtp(_ctx(), _ctx())
    router.map_address(publisher.getsockname(), pub)
    video = _fastpath.InStream(None, VIDEO_SSRC, _fastpath.CODEC_VP8, VIDEO_PT, 90000)
    pub.bind(VIDEO_SSRC, video)
    video.add(_fastpath.OutTrack(viewer, 0xA000, VIDEO_PT, 90000, True, 100, 1000))
    sender = _ctx()
    keyframe = bytes([0x10, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00])
    for i, size in enumerate(sizes):
        header = struct.pack("!BBHII", 0x80, VIDEO_PT | (0x80 if i == len(sizes) - 1 else 0), 10 + i, 9000, VIDEO_SSRC)
        payload = (keyframe if i == 0 else b"\x00") + bytes(size)
        publisher.sendto(sender.protect(header + payload[:size]), ("127.0.0.1", server.getsockname()[1]))
    _readable(router, server, len(sizes))
    publisher.close()


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["ipv4-socket", "dual-stack-socket"])
def family(request) -> int:
    return request.param


def test_answers_path_media_and_python_sends_leave_from_the_address_the_client_sent_to(family):
    server = _server(family)
    port = server.getsockname()[1]
    router = _fastpath.Router(server.fileno(), family, True)
    client = _client()
    ep = _fastpath.Endpoint()
    ep.set_srtp(_ctx(), _ctx())
    # a check from 127.0.0.1 to the server's second address: handed back with its local index
    client.sendto(STUN_LIKE, ("127.0.0.2", port))
    (kind, found, _data, addr, local) = _readable(router, server, 1)[0]
    assert kind == _fastpath.KIND_STUN and found is None
    assert router.local_address(local) == "127.0.0.2" and router.local_addresses == [None, "127.0.0.2"]
    # Python answers it (MediaPort passes the index), then ICE maps the address and selects it
    router.sendto(b"answer", addr, local)
    router.note_arrival(addr, local)
    router.map_address(addr, ep)
    router.set_path(ep, addr)
    assert router.path_local(ep) == "127.0.0.2"
    # media from the fast path (one GSO run of 3 + 1 shorter) and Python's own sends to the path
    _publish_frame(router, server, ep, [800, 800, 800, 100])
    router.sendto(b"rtcp-from-python", addr)  # -1: the path's local address
    got = _receive_all(client, 6)
    assert [src for _, src in got] == ["127.0.0.2"] * 6, got
    assert got[0][0] == b"answer" and got[-1][0] == b"rtcp-from-python"
    assert router.gso_sends >= 1


def test_stun_checks_of_another_pair_do_not_move_the_path_but_its_media_does(family):
    server = _server(family)
    port = server.getsockname()[1]
    router = _fastpath.Router(server.fileno(), family, True)
    client = _client()
    ep = _fastpath.Endpoint()
    ep.set_srtp(_ctx(), _ctx())
    client.sendto(STUN_LIKE, ("127.0.0.2", port))
    (_, _, _, addr, local) = _readable(router, server, 1)[0]
    router.note_arrival(addr, local)
    router.map_address(addr, ep)
    router.set_path(ep, addr)
    # the client keeps checking its other pair (same source, our third address): answered from there
    client.sendto(STUN_LIKE, ("127.0.0.3", port))
    (_, found, _, addr3, local3) = _readable(router, server, 1)[0]
    assert found is ep and addr3 == addr and router.local_address(local3) == "127.0.0.3"
    assert router.path_local(ep) == "127.0.0.2"
    router.sendto(b"answer", addr3, local3)
    router.sendto(b"to-the-path", addr)
    assert [src for _, src in _receive_all(client, 2)] == ["127.0.0.3", "127.0.0.2"]
    # DTLS (or SRTP) on 127.0.0.3: the peer moved its traffic there, so does the path
    client.sendto(DTLS_LIKE, ("127.0.0.3", port))
    _readable(router, server, 1)
    assert router.path_local(ep) == "127.0.0.3"
    router.set_path(ep, None)
    assert router.path_local(ep) is None


@pytest.mark.parametrize("mode", ["plain", "refused"])
def test_sends_without_gso_carry_the_source_address_too(mode):
    """GSO off, or refused by the kernel (the fallback resends the flush one datagram per message)."""
    server = _server(socket.AF_INET6, no_check=mode == "refused")
    port = server.getsockname()[1]
    router = _fastpath.Router(server.fileno(), socket.AF_INET6, mode != "plain")
    client = _client()
    ep = _fastpath.Endpoint()
    ep.set_srtp(_ctx(), _ctx())
    client.sendto(DTLS_LIKE, ("127.0.0.2", port))
    addr = (client.getsockname()[0], client.getsockname()[1])
    router.map_address(addr, ep)
    router.set_path(ep, addr)
    assert router.path_local(ep) is None  # nothing arrived from the path yet: the kernel picks
    _readable(router, server, 1)
    assert router.path_local(ep) == "127.0.0.2"
    _publish_frame(router, server, ep, [600, 600, 600])
    assert [src for _, src in _receive_all(client, 3)] == ["127.0.0.2"] * 3
    assert router.gso_sends == 0
    assert router.gso_failures == (1 if mode == "refused" else 0)


def test_without_pktinfo_on_the_socket_nothing_is_added():
    """A socket without the option (or bound to one address): no local index, the kernel picks."""
    server = _server(socket.AF_INET, pktinfo=False)
    router = _fastpath.Router(server.fileno(), socket.AF_INET, True)
    client = _client()
    client.sendto(STUN_LIKE, ("127.0.0.2", server.getsockname()[1]))
    (_, _, _, addr, local) = _readable(router, server, 1)[0]
    assert local == 0 and router.local_address(0) is None and router.local_addresses == [None]
    router.sendto(b"answer", addr, local)
    assert _receive_all(client, 1)[0][1] == "127.0.0.1"  # the route back's address: why the option is on


def test_sendto_reports_errors_as_socket_sendto_does():
    server = _server(socket.AF_INET)
    router = _fastpath.Router(server.fileno(), socket.AF_INET, True)
    with pytest.raises(ValueError):
        router.sendto(b"x", ("not-an-address", 1))
    with pytest.raises(OSError):
        router.sendto(b"x" * 70000, ("127.0.0.1", 9))  # EMSGSIZE


class _AnsweringManager:
    """Answers every datagram to its sender, and queues one more datagram for `other` each time."""

    def __init__(self, other: tuple) -> None:
        self.other = other
        self.on_wakeup = None
        self.media_poll = None
        self._out: list[tuple[bytes, tuple]] = []

    def handle_datagram(self, kind, endpoint, data, addr, now) -> None:
        self._out.append((b"answer-to-" + data[-1:], addr))
        self._out.append((b"other", self.other))

    def handle_timer(self, now: float) -> None:
        pass

    def next_deadline(self) -> float:
        return float("inf")

    def take_datagrams(self) -> list:
        out, self._out = self._out, []
        return out


@pytest.mark.parametrize("host", ["0.0.0.0", "::"], ids=["ipv4-socket", "dual-stack-socket"])
def test_media_port_answers_each_datagram_from_where_it_arrived(host):
    """Checks from one client address to two of ours, handled in one batch: each answer from the
    address its check went to; what is not an answer (here, to another peer) from the kernel's choice."""
    import asyncio

    loop = asyncio.new_event_loop()
    sock = udp.open_media_socket(host, 0, ipv6=host == "::")
    port = udp.MediaPort(sock, loop)  # sets IP_PKTINFO / IPV6_RECVPKTINFO itself
    client, bystander = _client(), _client()
    manager = _AnsweringManager(bystander.getsockname())
    port.manager = manager
    manager.media_poll = port.poll_media
    try:
        target = sock.getsockname()[1]
        client.sendto(STUN_LIKE + b"2", ("127.0.0.2", target))
        client.sendto(STUN_LIKE + b"3", ("127.0.0.3", target))
        import select

        while port.router.datagrams_in < 2:
            assert select.select([sock], [], [], 2.0)[0], "datagrams did not arrive"
            port._on_readable()
        got = dict((data, src) for data, src in _receive_all(client, 2))
        assert got == {b"answer-to-2": "127.0.0.2", b"answer-to-3": "127.0.0.3"}
        assert [src for _, src in _receive_all(bystander, 2)] == ["127.0.0.1", "127.0.0.1"]
        assert not port.send_errors
    finally:
        port.stop()
        loop.close()
