"""A session belongs to its creator (issue: hostile clients, point 3; RFC 9725 §4.3 for 404).

The session URL that the creator received in `Location` is the capability that controls the
session. Nothing the server publishes (`/api/stats`, logs) names it: stats list sessions by a
one-way public id. Anybody else, with or without a token, can only name sessions that do not
exist: 404, counted, nothing changes.
"""

from __future__ import annotations

import aiohttp

from sfu.core.sessions import public_id
from sfu.testing import PacketPublisher, PacketViewer

TRICKLE = "application/trickle-ice-sdpfrag"
RESTART = "a=ice-ufrag:evil\r\na=ice-pwd:evil-password-0123456789ab\r\n"


def resource_id(client: PacketViewer | PacketPublisher) -> str:
    assert client.resource_url is not None
    return client.resource_url.rsplit("/", 1)[1]


async def test_stats_do_not_reveal_session_urls(server):
    async with PacketPublisher(server.whip_url("o"), server.mint_token("o", publish=True)) as publisher, \
            PacketViewer(server.whep_url("o")) as viewer:
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, 15)
        stats = server.stats()
        secrets = {resource_id(publisher), resource_id(viewer)}
        text = repr(stats)
        assert not any(secret in text for secret in secrets)
        assert set(stats["sessions"]) == {public_id(s) for s in secrets}
        assert stats["streams"]["o"]["publisher"] == public_id(resource_id(publisher))


async def test_others_cannot_end_pause_or_take_over_a_viewer(server):
    """What a client without the session URL can try with what the stats show: every attempt is
    404 and counted; the viewer keeps receiving and its ICE credentials stay its own."""
    async with PacketPublisher(server.whip_url("v"), server.mint_token("v", publish=True)) as publisher, \
            PacketViewer(server.whep_url("v")) as viewer:
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, 15)
        async with aiohttp.ClientSession() as http:
            admin = {"Authorization": f"Bearer {server.mint_admin_token()}"}
            async with http.get(server.http_url + "/api/stats", headers=admin) as r:
                listed = [sid for sid, s in (await r.json())["sessions"].items() if s["kind"] == "whep"]
            assert listed == [public_id(resource_id(viewer))]
            victim = server.whep_url("v") + "/" + listed[0]
            publish_token = {"Authorization": f"Bearer {server.mint_token('v', publish=True)}"}
            async with http.post(victim + "/layer", json={"paused": True}) as r:
                assert r.status == 404
            async with http.patch(victim, data=RESTART, headers={"Content-Type": TRICKLE}) as r:
                assert r.status == 404
            async with http.delete(victim) as r:
                assert r.status == 404
            publisher_by_stats = server.whip_url("v") + "/" + public_id(resource_id(publisher))
            async with http.delete(publisher_by_stats, headers=publish_token) as r:
                assert r.status == 404  # a publish token for the stream is not the session
            async with http.get(server.http_url + "/metrics", headers=admin) as r:
                rejected = await r.text()
        assert 'sfu_http_rejected_total{reason="not_found"} 4.0' in rejected
        before = viewer.stats["video"]["frames"]
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= before + 30, 10)
        assert server.stats()["counters"].get("ice-restarts", 0) == 0
        assert publisher.stats["srtp_profile"] is not None


async def test_the_creator_controls_its_session_and_delete_twice_is_404(server):
    async with PacketPublisher(server.whip_url("c"), server.mint_token("c", publish=True)), \
            PacketViewer(server.whep_url("c")) as viewer:
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, 15)
        url = viewer.resource_url
        assert url is not None
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/layer", json={"paused": True}) as r:
                assert r.status == 200 and (await r.json())["limit"]["paused"] is True
            async with http.delete(url) as r:
                assert r.status == 200
            async with http.delete(url) as r:
                assert r.status == 404  # RFC 9725 §4.3: the session is gone
            async with http.patch(url, data="a=end-of-candidates\r\n", headers={"Content-Type": TRICKLE}) as r:
                assert r.status == 404
        viewer.resource_url = None  # already deleted: the client's own stop() sends nothing more


async def test_cors_preflight_grants_no_credentials(server):
    """Any origin may preflight, but browsers are never told to send cookies or HTTP auth along:
    a page on another origin gains nothing it could not do with a plain request."""
    async with aiohttp.ClientSession() as http:
        headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"}
        async with http.options(server.whep_url("x") + "/abc", headers=headers) as r:
            assert r.status == 204
            assert "Access-Control-Allow-Credentials" not in r.headers
