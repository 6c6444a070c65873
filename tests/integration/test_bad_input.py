"""Every bad signalling input gets its precise status from the real server (issue: bad input)."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from aiortc import RTCPeerConnection
from aiortc_clients import AiortcPublisher, post_sdp

import sfu
from sfu import tokens


async def _offer(video: bool = True, audio: bool = True, codec: str | None = None, direction: str = "sendonly") -> str:
    pc = RTCPeerConnection()
    if video:
        transceiver = pc.addTransceiver("video", direction=direction)
        if codec:
            from aiortc.rtcrtpsender import RTCRtpSender

            caps = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() in (f"video/{codec.lower()}", "video/rtx")])
    if audio:
        pc.addTransceiver("audio", direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_whip_token_errors(server):
    offer = await _offer()
    url = server.whip_url("shop")
    assert (await post_sdp(url, offer))[0] == 401  # missing
    assert (await post_sdp(url, offer, "not-a-jwt"))[0] == 401  # malformed
    expired = tokens.mint(server.token_secret, "shop", publish=True, subscribe=False, ttl_s=60, now=1_000_000)
    status, body, _ = await post_sdp(url, offer, expired)
    assert status == 401 and "expired" in body
    other = tokens.mint("x" * 40, "shop", publish=True, subscribe=False)
    assert (await post_sdp(url, offer, other))[0] == 401  # wrong secret
    assert (await post_sdp(url, offer, server.mint_token("other", publish=True)))[0] == 403  # wrong stream
    assert (await post_sdp(url, offer, server.mint_token("shop", subscribe=True)))[0] == 403  # wrong capability


async def test_whip_bad_bodies(server):
    token = server.mint_token("shop", publish=True)
    url = server.whip_url("shop")
    offer = await _offer()
    assert (await post_sdp(url, offer, token, content_type="text/plain"))[0] == 415
    status, body, _ = await post_sdp(url, "v=0\r\nthis is not sdp\r\n", token)
    assert status == 400 and body
    no_fingerprint = "\r\n".join(line for line in offer.split("\r\n") if not line.startswith("a=fingerprint"))
    status, body, _ = await post_sdp(url, no_fingerprint, token)
    assert status == 422 and "fingerprint" in body
    recvonly = await _offer(direction="recvonly")
    status, body, _ = await post_sdp(url, recvonly, token)
    assert status == 422
    status, _, _ = await post_sdp(url, offer + "a=x:" + "y" * 70000 + "\r\n", token)
    assert status == 413
    assert server.stats()["sessions"] == {}  # nothing half-created


async def test_whep_not_live_is_409_with_retry_after(server):
    status, body, headers = await post_sdp(server.whep_url("nobody"), await _offer(direction="recvonly"))
    assert status == 409
    assert int(headers["Retry-After"]) > 0


@pytest.fixture
async def waiting_server():
    config = sfu.Config.for_tests()
    config.whep_wait_for_publisher = True
    config.whep_wait_timeout = 10.0
    async with sfu.Server(config) as srv:
        yield srv


async def test_whep_waits_for_the_publisher_when_configured(waiting_server):
    server = waiting_server
    viewer = asyncio.ensure_future(post_sdp(server.whep_url("late"), await _offer(direction="recvonly")))
    await asyncio.sleep(0.2)
    assert not viewer.done()  # held open, not 409
    publisher = await AiortcPublisher(server, "late").start()
    try:
        status, body, _ = await asyncio.wait_for(viewer, 10)
        assert status == 201 and "m=video" in body
    finally:
        await publisher.close()


async def test_whep_wait_that_runs_out_is_409_with_retry_after(waiting_server):
    server = waiting_server
    server.config.whep_wait_timeout = 0.2
    status, body, headers = await post_sdp(server.whep_url("nobody"), await _offer(direction="recvonly"))
    assert (status, headers["Retry-After"]) == (409, "2") and "did not go live in time" in body
    assert server.stats()["counters"]["rejected-not-live"] == 1


async def test_whep_codec_mismatch_is_422_never_406(server):
    publisher = await AiortcPublisher(server, "h264only", codec="H264").start()
    try:
        status, body, _ = await post_sdp(server.whep_url("h264only"), await _offer(codec="VP8", direction="recvonly"))
        assert status == 422
        assert "H264" in body
    finally:
        await publisher.close()


async def test_unknown_session_resources(server):
    token = server.mint_token("shop", publish=True)
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/trickle-ice-sdpfrag"}
        async with http.patch(server.whip_url("shop") + "/nope", data="a=ice-ufrag:abcd\r\n", headers=headers) as r:
            assert r.status == 404
        async with http.delete(server.whip_url("shop") + "/nope", headers=headers) as r:
            assert r.status == 404  # an unknown session URL (RFC 9725 §4.3)


async def test_patch_trickle_and_ice_restart(server):
    publisher = await AiortcPublisher(server, "patchy").start()
    token = server.mint_token("patchy", publish=True)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.options(publisher.location) as r:
                etag = None
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/trickle-ice-sdpfrag"}
            ufrag = re.search(r"a=ice-ufrag:(\S+)", publisher.pc.localDescription.sdp).group(1)
            trickle = f"a=ice-ufrag:{ufrag}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n"
            async with http.patch(publisher.location, data=trickle, headers=headers) as r:
                assert r.status == 204
                etag = r.headers["ETag"]
            async with http.patch(publisher.location, data=trickle, headers={**headers, "If-Match": '"wrong"'}) as r:
                assert r.status == 412
            restart = "a=ice-ufrag:new1\r\na=ice-pwd:0123456789abcdef0123456789\r\n"
            async with http.patch(publisher.location, data=restart, headers={**headers, "If-Match": etag}) as r:
                assert r.status == 200
                body = await r.text()
                assert r.headers["ETag"] != etag
                assert "a=ice-ufrag:" in body and "a=candidate:" in body and "a=end-of-candidates" in body
    finally:
        await publisher.close()


@pytest.fixture
async def limited_server():
    config = sfu.Config.for_tests()
    config.max_sessions = 1
    config.viewer_token_required = True
    async with sfu.Server(config) as srv:
        yield srv


async def test_session_limit_is_503_and_viewer_token_required(limited_server):
    server = limited_server
    publisher = await AiortcPublisher(server, "one").start()
    try:
        viewer_offer = await _offer(direction="recvonly")
        assert (await post_sdp(server.whep_url("one"), viewer_offer))[0] == 401
        status, _, headers = await post_sdp(server.whep_url("one"), viewer_offer, server.mint_token("one", subscribe=True))
        assert status == 503
        assert int(headers["Retry-After"]) > 0
    finally:
        await publisher.close()
