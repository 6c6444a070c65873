"""Forged STUN checks against a live stream (issue: hostile clients, points 1 and 2).

An attacker here is a client that knows its own session's ICE credentials (any viewer does) and
can put any source address on a datagram. On loopback the forged source is real: the test sends
through the publisher's own socket (its address and port), or from a third party's socket that
only counts what it receives.
"""

from __future__ import annotations

import asyncio

import pytest
from aiortc_clients import wait_until

from sfu.core.sessions import public_id
from sfu.testing import PacketPublisher, PacketViewer
from sfu.wire import stun

FRAMES_AFTER_ATTACK = 45  # ~1.5 s of the test publisher's 30 fps: media kept flowing
RTP_FIRST_BYTES = range(128, 192)  # RFC 7983 §7


def check_from(client: PacketViewer, *, pwd: str | None = None, nominate: bool = False) -> bytes:
    """A Binding request carrying `client`'s own USERNAME (its session's, as the server named it)."""
    assert client.answer is not None
    _, data = stun.binding_request(
        f"{client.answer.ice_ufrag}:{client._ice_ufrag}", pwd or client.answer.ice_pwd,
        use_candidate=nominate,
    )
    return data


class ThirdParty(asyncio.DatagramProtocol):
    """A bystander's UDP socket: counts what arrives, never answers."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams.append(data)

    @property
    def media(self) -> int:
        return sum(1 for d in self.datagrams if d and d[0] in RTP_FIRST_BYTES)


@pytest.mark.parametrize("integrity", ["valid", "bad"])
@pytest.mark.parametrize("nominate", [False, True], ids=["plain", "use-candidate"])
async def test_forged_check_from_publisher_address_does_not_stop_the_stream(server, integrity, nominate):
    """A check naming another session, sent from the publisher's address and port, neither
    takes the publisher's address away nor binds it to the attacker's session."""
    async with PacketPublisher(server.whip_url("s"), server.mint_token("s", publish=True)) as publisher, \
            PacketViewer(server.whep_url("s")) as victim, PacketViewer(server.whep_url("s")) as attacker:
        await victim.wait_for(lambda: victim.stats["video"]["frames"] >= 5, 15)
        forged = check_from(attacker, pwd=None if integrity == "valid" else "not-the-password-0123456789",
                            nominate=nominate)
        assert publisher.selected_remote is not None
        before = victim.stats["video"]["frames"]
        publisher._sendto(0, forged, publisher.selected_remote)  # the publisher's own source address
        await victim.wait_for(lambda: victim.stats["video"]["frames"] >= before + FRAMES_AFTER_ATTACK, 10)
        assert server.stats()["counters"]["stun-dropped-address-of-another-session"] == 1
        attacker_frames = attacker.stats["video"]["frames"]
        await attacker.wait_for(lambda: attacker.stats["video"]["frames"] > attacker_frames, 10)
        sessions = server.stats()["sessions"]
        assert sessions[public_id(publisher.resource_url.rsplit("/", 1)[1])]["connected"]


async def test_forged_source_check_does_not_reflect_media(server):
    """A viewer's own valid credentials on checks from a third party's address (with
    USE-CANDIDATE, repeated) never send the viewer's media there: the server asks the address
    first (a consent request) and it never answers. The viewer keeps receiving."""
    loop = asyncio.get_running_loop()
    transport, bystander = await loop.create_datagram_endpoint(ThirdParty, local_addr=("127.0.0.1", 0))
    try:
        async with PacketPublisher(server.whip_url("r"), server.mint_token("r", publish=True)), \
                PacketViewer(server.whep_url("r")) as viewer:
            await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, 15)
            assert viewer.selected_remote is not None
            before = viewer.stats["video"]["frames"]
            for _ in range(4):
                transport.sendto(check_from(viewer, nominate=True), viewer.selected_remote)
            await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= before + FRAMES_AFTER_ATTACK, 10)
            assert bystander.media == 0
            handle = public_id(viewer.resource_url.rsplit("/", 1)[1])
            await wait_until(
                lambda: server.stats()["sessions"][handle]["drops"].get("consent-unanswered", 0) >= 1,
                10, "the server to give up asking the forged address",
            )
            assert bystander.media == 0
            # what did reach the bystander: answers to its checks and a bounded round of requests
            assert len(bystander.datagrams) <= 4 + 4
            assert all(stun.is_stun(d) for d in bystander.datagrams)
    finally:
        transport.close()


async def test_nominated_path_that_answers_takes_the_media(server):
    """A real path move still works: the client nominates its second address, answers the
    server's consent request there, and the media follows to that address."""
    async with PacketPublisher(server.whip_url("m"), server.mint_token("m", publish=True)), \
            PacketViewer(server.whep_url("m"), extra_check_addrs=1) as viewer:
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, 15)
        assert viewer.selected_remote is not None
        loop = asyncio.get_running_loop()
        viewer._send_check(1, viewer.selected_remote, True, loop.time())
        viewer._send_check(1, viewer.selected_remote, True, loop.time())
        await viewer.wait_for(lambda: viewer.socket_stats[1]["rtp"] >= 30, 10)
