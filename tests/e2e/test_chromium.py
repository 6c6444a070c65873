"""Headless Chromium publishing over WHIP and watching over WHEP through the server."""
from __future__ import annotations

import asyncio
import re

import pytest

from e2e_helpers import (
    AUDIO_RECEIVED,
    VIDEO_DECODED,
    open_publisher,
    open_viewer,
    summarize_ms,
    time_to_first_frame,
    wait_all,
    wait_for,
)

pytestmark = pytest.mark.e2e

VIEWERS = 20  # concurrent viewers of one stream
TTFF_JOINS = 10


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_camera_and_mic_published_and_watched(context, server, codec):
    publisher = await open_publisher(context, server, "shop1", codec=codec)
    sent = await publisher.stats()
    assert [o["codec"].upper() for o in sent["outbound"].values() if o["kind"] == "video"] == [codec], sent
    viewer = await open_viewer(context, server, "shop1")

    s = await wait_for(viewer, VIDEO_DECODED, what="decoded video", pages=[publisher])
    assert s["video"]["codec"].upper() == codec, s["video"]
    await wait_for(viewer, AUDIO_RECEIVED, what="received audio", pages=[publisher])
    await wait_for(viewer, "s => s.video.framesDecoded >= 30", what="30 decoded frames", pages=[publisher])


@pytest.mark.parametrize("order", ["audio-first", "video-first"])
async def test_audio_only_publisher_watched_by_audio_video_viewer(context, server, order):
    """A viewer that offers audio + video watches an audio-only stream in either transceiver order
    (players usually add video first: the offer's first section, the bundle's transport, is then
    the one the stream cannot feed; it is answered inactive inside the bundle, never port 0)."""
    stream = f"radio-{order}"
    publisher = await open_publisher(context, server, stream, audio=True, video=False)
    viewer = await open_viewer(context, server, stream, order=order)

    # audio really arrives and plays: packets and decoded samples, growing
    first = await wait_for(viewer, AUDIO_RECEIVED, what="received audio", pages=[publisher])
    await wait_for(viewer, f"s => s.audio.totalSamplesReceived > {first['audio']['totalSamplesReceived']} + 48000",
                   what="one more second of audio samples", pages=[publisher])
    state = await viewer.state()
    assert state["error"] is None, state
    # The answer keeps both sections in the offer's order, both in the BUNDLE group, none rejected.
    offered = re.findall(r"^m=(\w+) ", state["localSdp"], re.M)
    assert offered == (["video", "audio"] if order == "video-first" else ["audio", "video"]), state["localSdp"]
    sections = re.findall(r"^m=(\w+) (\d+)", state["remoteSdp"], re.M)
    assert [kind for kind, _ in sections] == offered and all(port != "0" for _, port in sections), state["remoteSdp"]
    assert re.search(r"^a=group:BUNDLE \S+ \S+", state["remoteSdp"], re.M), state["remoteSdp"]
    stats = await viewer.stats()
    assert stats["connectionState"] == "connected", stats
    assert stats["video"] is None or not stats["video"].get("framesDecoded"), stats


async def test_twenty_concurrent_viewers(context, server):
    publisher = await open_publisher(context, server, "auction")
    # One viewer displays; the others decode without displaying (render=0), which spares about a
    # third of Chromium's CPU on a 2-core machine that also runs the server.
    viewers = await asyncio.gather(*(open_viewer(context, server, "auction", render=(i == 0))
                                     for i in range(VIEWERS)))

    await wait_all(viewers, VIDEO_DECODED, timeout=60, what="decoded video on every viewer")
    # Still flowing everywhere, not just a first frame.
    await wait_all(viewers, "s => s.video.framesDecoded >= 30", timeout=60, what="30 decoded frames")
    assert publisher  # kept open until the end


async def test_ttff(context, server, capsys):
    """Time from the WHEP POST to the first decoded frame, over sequential joins (printed, not asserted)."""
    publisher = await open_publisher(context, server, "ttff")
    samples = []
    for _ in range(TTFF_JOINS):
        viewer = await open_viewer(context, server, "ttff")
        samples.append(await time_to_first_frame(viewer))
        await viewer.stop()
        await viewer.close()
    with capsys.disabled():
        print(f"\nChromium VP8 publisher, time to first frame: {summarize_ms(samples)}")
    assert len(samples) == TTFF_JOINS
    assert publisher


async def test_simulcast_publisher_watched_per_layer(context, server):
    """Browser simulcast (rids q/h/f): a viewer pinned to the lowest layer and one left to the
    server both decode video; the pinned one gets the quarter-resolution layer."""
    publisher = await open_publisher(context, server, "sim", simulcast=True)
    await wait_for(publisher, """s => ["q", "h", "f"].every(r => s.outbound[r] && s.outbound[r].bytesSent > 0)""",
                   what="all three layers sent")
    low = await open_viewer(context, server, "sim", layer="q")
    auto = await open_viewer(context, server, "sim")

    s = await wait_for(low, "s => s.video !== null && s.video.framesDecoded > 10 && s.video.frameWidth > 0",
                       what="decoded video on the q layer", pages=[publisher])
    sent = await publisher.stats()
    assert s["video"]["frameWidth"] <= sent["outbound"]["q"]["frameWidth"], (s["video"], sent["outbound"])
    await wait_for(auto, VIDEO_DECODED, what="decoded video", pages=[publisher])
