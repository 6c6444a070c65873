"""Media transport with the packet-level clients: SRTP profiles, IPv6, RTCP legs, consent."""

from __future__ import annotations

import pytest
from aiortc_clients import wait_until

import sfu
from sfu.testing import PacketPublisher, PacketViewer


@pytest.mark.parametrize(
    ("profiles", "expected"),
    [
        (("AEAD_AES_128_GCM",), "SRTP_AEAD_AES_128_GCM"),
        (("AES_CM_128_HMAC_SHA1_80",), "SRTP_AES128_CM_SHA1_80"),
        (("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"), "SRTP_AEAD_AES_128_GCM"),
    ],
)
async def test_srtp_profiles(server, profiles, expected):
    """GCM preferred whatever the client's order; CM-SHA1-80 when it is all the client has."""
    async with PacketPublisher(server.whip_url("p"), server.mint_token("p", publish=True), srtp_profiles=profiles) as publisher, \
            PacketViewer(server.whep_url("p"), srtp_profiles=profiles) as viewer:
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 10 and viewer.stats["audio"]["packets"] >= 10, 15)
        assert publisher.stats["srtp_profile"] == expected
        assert viewer.stats["srtp_profile"] == expected
        assert viewer.stats["video"]["gaps"] == 0


async def test_server_ends_both_rtcp_legs(server):
    """Receiver reports to the publisher, sender reports (the viewer's SSRCs) to the viewer."""
    async with PacketPublisher(server.whip_url("r"), server.mint_token("r", publish=True)) as publisher, \
            PacketViewer(server.whep_url("r")) as viewer:
        await viewer.wait_for(lambda: viewer.stats["sr_received"] >= 2, 10)
        await publisher.wait_for(lambda: publisher.stats["receiver_reports"] >= 2, 10)
        # the viewer's join started it from the keyframe cache, or (a miss) asked for a keyframe
        repair = server.stats()["repair"]
        assert repair["cache_hits"] >= 1 or publisher.stats["plis_received"] >= 1


@pytest.fixture
async def ipv6_server():
    config = sfu.Config.for_tests()
    config.udp_host = "::1"
    config.public_ips = ["::1"]
    async with sfu.Server(config) as srv:
        yield srv


async def test_ipv6_media(ipv6_server):
    server = ipv6_server
    async with PacketPublisher(server.whip_url("v6"), server.mint_token("v6", publish=True), local_addr="::1"), \
            PacketViewer(server.whep_url("v6"), local_addr="::1") as viewer:
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 10, 15)
    session_paths = [s["path"][0] for s in server.stats()["sessions"].values() if s["path"]]
    assert all(":" in host for host in session_paths)


async def test_vanished_viewer_is_freed_by_consent(server):
    """A viewer that disappears without DELETE (no checks, no RTCP) is freed within 30 s."""
    async with PacketPublisher(server.whip_url("c"), server.mint_token("c", publish=True)):
        viewer = PacketViewer(server.whep_url("c"))
        await viewer.start()
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, 15)
        assert server.stats()["streams"]["c"]["viewers"] == 1
        await viewer._close()  # vanish: sockets closed, no DELETE, no close_notify
        await wait_until(lambda: server.stats()["streams"]["c"]["viewers"] == 0, 30, "the vanished viewer to be freed",
                         interval=0.5)
        assert server.stats()["counters"]["closed-whep"] == 1
