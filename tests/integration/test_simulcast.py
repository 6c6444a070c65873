"""Simulcast through a real server on loopback: layer choice at WHEP time and during the session,
OBS-style rids, and the automatic downgrade / upgrade driven by a viewer's transport-cc feedback."""

from __future__ import annotations

import asyncio
import time

import aiohttp

import sfu
from sfu.core.sessions import public_id
from sfu.testing import PacketPublisher, PacketViewer
from sfu.wire import rtcp

RIDS = ["q", "h", "f"]  # 320x180 / 640x360 / 1280x720 at 62 k / 250 k / 1 Mbit/s


def admin_header(server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.mint_admin_token()}"}


def _layer_state(server: sfu.Server, viewer_id: str | None = None) -> dict:
    sessions = server.stats()["sessions"]
    whep = [s for sid, s in sessions.items() if s["kind"] == "whep" and (viewer_id is None or sid == viewer_id)]
    return whep[0]["video_layer"]


def _session_id(viewer: PacketViewer) -> str:
    """The viewer's name in the stats: the public id of the session URL it was given."""
    return public_id(viewer.resource_url.rstrip("/").rsplit("/", 1)[1])


async def _until(predicate, timeout: float, step: float = 0.05) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)
    return time.monotonic() - start


async def test_viewers_get_the_layer_they_ask_for() -> None:
    async with sfu.Server(sfu.Config.for_tests()) as server:
        pub, sub = server.mint_token("shop", publish=True), server.mint_token("shop", subscribe=True)
        async with PacketPublisher(server.whip_url("shop"), pub, simulcast_rids=RIDS, keyframe_interval=1.0) as publisher:
            asks = [({"layer": "q"}, (320, 180), 0), ({"layer": "h"}, (640, 360), 1),
                    ({"max_height": "400"}, (640, 360), 1), ({}, (1280, 720), 2)]
            viewers = [PacketViewer(server.whep_url("shop"), sub, audio=False, query=q) for q, _, _ in asks]
            for viewer in viewers:
                await viewer.start()
            try:
                for viewer in viewers:
                    await viewer.wait_for(lambda v=viewer: v.stats["video"]["frames"] >= 30, timeout=10)
                for viewer, (query, resolution, index) in zip(viewers, asks, strict=False):
                    video = viewer.stats["video"]
                    assert video["resolution"] == resolution, (query, video["resolution"])
                    assert set(video["layers"]) == {index}, (query, video["layers"])
                    assert video["packets_before_keyframe"] == 0 and video["gaps"] == 0
                assert publisher.stats["twcc_feedback_received"] > 0  # the server gives feedback
                layers = server.stats()["streams"]["shop"]["tracks"][1]["layers"]
                assert sorted(layer["height"] for layer in layers) == [180, 360, 720]
                async with aiohttp.ClientSession() as http, http.get(server.http_url + "/metrics", headers=admin_header(server)) as resp:
                    text = await resp.text()
                # bounded cardinality: viewers by layer, never by session (tests/integration/test_quality_figures.py)
                assert 'sfu_viewers{layer="q"} 1.0' in text and 'sfu_viewers{layer="h"} 2.0' in text
                assert 'sfu_viewers{layer="f"} 1.0' in text and "session=" not in text
            finally:
                for viewer in viewers:
                    await viewer.stop()


async def test_http_layer_call_switches_a_running_viewer() -> None:
    async with sfu.Server(sfu.Config.for_tests()) as server:
        pub, sub = server.mint_token("shop", publish=True), server.mint_token("shop", subscribe=True)
        async with PacketPublisher(server.whip_url("shop"), pub, simulcast_rids=RIDS, keyframe_interval=4.0), \
                PacketViewer(server.whep_url("shop"), sub) as viewer, aiohttp.ClientSession() as http:
            await viewer.wait_for(lambda: viewer.stats["video"]["resolution"] == (1280, 720), timeout=10)
            url = viewer.resource_url + "/layer"
            headers = {"Authorization": f"Bearer {sub}"}
            async with http.post(url, json={"layer": "q"}, headers=headers) as resp:
                assert resp.status == 200
                assert (await resp.json())["limit"]["layer"] == "q"
            # the switch waits for a keyframe the server asks for: well before the 4 s interval
            took = await _until(lambda: viewer.stats["video"]["resolution"] == (320, 180), timeout=3)
            assert took < 2.0
            await _until(lambda: _layer_state(server)["current_layer"] == "q", timeout=1)  # polled per tick
            assert _layer_state(server)["switches"] == 1
            async with http.post(url, json={"paused": True}, headers=headers) as resp:
                assert resp.status == 200
            await asyncio.sleep(0.3)
            frames = viewer.stats["video"]["frames"]
            await asyncio.sleep(0.5)
            assert viewer.stats["video"]["frames"] == frames  # paused
            assert viewer.stats["audio"]["packets"] > 0
            async with http.post(url, json={}, headers=headers) as resp:  # automatic again
                assert resp.status == 200
            await _until(lambda: viewer.stats["video"]["resolution"] == (1280, 720), timeout=8)
            video = viewer.stats["video"]
            assert video["frames"] > frames and video["lost_final"] == 0 and video["duplicates"] == 0
            assert len(video["ssrcs"]) == 1  # one stream for the viewer throughout
            async with http.post(url, json={"max_height": "x"}, headers=headers) as resp:
                assert resp.status == 400


class ObsLikePublisher(PacketPublisher):
    """OBS 32.1+: rids "0".."2" ("0" the highest) and only the first encoding's SSRC declared."""

    def build_offer(self) -> str:
        offer = super().build_offer()
        first = self._video_streams[0].ssrc
        video = offer.index("m=video")
        return offer[:video] + offer[video:].replace("a=rid:", f"a=ssrc:{first} cname:{self.cname}\r\na=rid:", 1)


async def test_obs_style_simulcast_all_layers_accepted_and_forwarded() -> None:
    async with sfu.Server(sfu.Config.for_tests()) as server:
        pub, sub = server.mint_token("obs", publish=True), server.mint_token("obs", subscribe=True)
        async with ObsLikePublisher(server.whip_url("obs"), pub, video_codec="H264", simulcast_rids=["0", "1", "2"],
                                    ignore_pli=True, keyframe_interval=1.0) as publisher, \
                PacketViewer(server.whep_url("obs"), sub, audio=False) as top, \
                PacketViewer(server.whep_url("obs"), sub, audio=False, query={"layer": "2"}) as low:
            assert f"a=ssrc:{publisher._video_streams[0].ssrc}" in publisher.build_offer()
            for viewer in (top, low):
                await viewer.wait_for(lambda v=viewer: v.stats["video"]["frames"] >= 20, timeout=10)
            assert top.stats["video"]["resolution"] == (1280, 720)  # "0" ranked highest, by its SPS
            assert low.stats["video"]["resolution"] == (320, 180)
            track = server.stats()["streams"]["obs"]["tracks"][1]
            assert track["rids"] == ["0", "1", "2"]
            assert sorted(layer["rid"] for layer in track["layers"]) == ["0", "1", "2"]
            assert all(layer["packets"] > 0 for layer in track["layers"])


async def test_slow_viewer_moves_down_within_2_s_and_back_up_later() -> None:
    async with sfu.Server(sfu.Config.for_tests()) as server:
        pub, sub = server.mint_token("shop", publish=True), server.mint_token("shop", subscribe=True)
        async with PacketPublisher(server.whip_url("shop"), pub, simulcast_rids=RIDS, keyframe_interval=2.0), \
                PacketViewer(server.whep_url("shop"), sub) as slow, \
                PacketViewer(server.whep_url("shop"), sub) as fast:
            for viewer in (slow, fast):
                await viewer.wait_for(lambda v=viewer: v.stats["video"]["resolution"] == (1280, 720), timeout=10)
            await asyncio.sleep(1.0)
            slow_id = _session_id(slow)
            slow.set_rate_limit(500_000)
            took = await _until(lambda: _layer_state(server, slow_id)["target_layer"] != "f", timeout=4)
            assert took < 2.0, _layer_state(server, slow_id)
            await _until(lambda: slow.stats["video"]["resolution"] != (1280, 720), timeout=3)
            assert _layer_state(server, slow_id)["estimate_bps"] < 600_000
            assert fast.stats["video"]["resolution"] == (1280, 720)  # the other viewer is not affected
            await asyncio.sleep(2.0)
            assert slow.stats["audio"]["lost_final"] <= 5  # audio kept flowing
            slow.set_rate_limit(None)
            await _until(lambda: _layer_state(server, slow_id)["current_layer"] == "f", timeout=15)
            assert slow.stats["video"]["resolution"] == (1280, 720)
            state = _layer_state(server, slow_id)
            assert state["bwe"]["probes_succeeded"] >= 1 and state["switches"] >= 2


async def test_an_overloaded_server_sends_lower_layers_until_media_stops_waiting() -> None:
    """A limit no socket meets (1 µs) makes every tick an overload: the guard cuts the video
    ceiling once a second, and the viewer, whose link would take the top layer, steps down to the
    lowest; the ceiling and the measured wait show in /api/stats and /metrics."""
    import dataclasses

    config = dataclasses.replace(sfu.Config.for_tests(), overload_queue_delay_ms=0.001)
    async with sfu.Server(config) as server:
        pub, sub = server.mint_token("shop", publish=True), server.mint_token("shop", subscribe=True)
        async with PacketPublisher(server.whip_url("shop"), pub, simulcast_rids=RIDS, keyframe_interval=1.0), \
                PacketViewer(server.whep_url("shop"), sub) as viewer:
            await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, timeout=10)
            await _until(lambda: _layer_state(server)["current_layer"] == "q", timeout=15)
            await viewer.wait_for(lambda: viewer.stats["video"]["resolution"] == (320, 180), timeout=5)
            guard = server.stats()["overload"]
            assert guard["cuts"] >= 2 and guard["ceiling_bps"] is not None
            assert guard["queue_delay_max_ms"] > 0
            async with aiohttp.ClientSession() as http, http.get(server.http_url + "/metrics", headers=admin_header(server)) as resp:
                text = await resp.text()
            ceiling = next(line for line in text.splitlines() if line.startswith("sfu_overload_ceiling_bps "))
            assert 0 < float(ceiling.split()[1]) < 1_000_000  # below the top layer's need (it goes on falling)
            assert "sfu_media_queue_delay_seconds " in text and "sfu_overload_cuts_total " in text


class RembOnlyViewer(PacketViewer):
    """A viewer that negotiates REMB but not transport-wide feedback (no transport-cc rtcp-fb, no
    transport-wide sequence extension), like older libwebrtc players; the test sends its REMBs."""

    def build_offer(self) -> str:
        lines = [line for line in super().build_offer().split("\r\n")
                 if "transport-cc" not in line and "transport-wide-cc" not in line]
        return "\r\n".join(lines)

    def send_remb(self, bps: int) -> None:
        self._send_rtcp(rtcp.serialize([rtcp.ReceiverReport(self.ssrc, []), rtcp.Remb(self.ssrc, bps, [])]))


async def test_remb_only_viewer_layer_follows_its_remb_down_and_up() -> None:
    async with sfu.Server(sfu.Config.for_tests()) as server:
        pub, sub = server.mint_token("remb", publish=True), server.mint_token("remb", subscribe=True)
        async with PacketPublisher(server.whip_url("remb"), pub, simulcast_rids=RIDS, keyframe_interval=1.0), \
                RembOnlyViewer(server.whep_url("remb"), sub, send_twcc=False) as viewer:
            viewer_id = _session_id(viewer)
            await viewer.wait_for(lambda: viewer.stats["video"]["resolution"] == (1280, 720), timeout=10)
            state = _layer_state(server, viewer_id)
            assert state["bwe"]["feedback"] == "remb" and state["bwe"]["rembs"] == 0
            viewer.send_remb(200_000)  # the receiver's estimate fell: only q (62 k) fits next to audio
            took = await _until(lambda: _layer_state(server, viewer_id)["current_layer"] == "q", timeout=5)
            assert took < 3.0, _layer_state(server, viewer_id)
            await viewer.wait_for(lambda: viewer.stats["video"]["resolution"] == (320, 180), timeout=5)
            assert _layer_state(server, viewer_id)["estimate_bps"] == 200_000
            viewer.send_remb(3_000_000)  # and rose again: back to f once the hold-off (4 s) ends
            await _until(lambda: _layer_state(server, viewer_id)["current_layer"] == "f", timeout=10)
            await viewer.wait_for(lambda: viewer.stats["video"]["resolution"] == (1280, 720), timeout=5)
            state = _layer_state(server, viewer_id)
            assert state["bwe"]["rembs"] == 2 and state["bwe"]["receiver_reports"] >= 1
