"""WHIP in, WHEP out through the one UDP port, with aiortc clients on loopback."""

from __future__ import annotations

import pytest

from aiortc_clients import AiortcPublisher, AiortcViewer, wait_until


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_publisher_forwarded_to_viewers(server, codec):
    publisher = await AiortcPublisher(server, "shop", codec=codec).start()
    viewers = [await AiortcViewer(server, "shop").start() for _ in range(3)]
    try:
        await wait_until(lambda: all(v.frames["video"] >= 10 and v.frames["audio"] >= 10 for v in viewers), 20,
                         "every viewer decodes video and audio")
        stats = server.stats()
        assert stats["streams"]["shop"]["live"]
        assert stats["streams"]["shop"]["viewers"] == 3
        drops = stats["router"]["drops"]
        assert drops["srtp-auth"] == 0 and drops["unknown-address"] == 0
    finally:
        for v in viewers:
            await v.close()
        await publisher.close()


async def test_each_viewer_gets_its_own_ssrc_and_payload_types(server):
    publisher = await AiortcPublisher(server, "ssrc").start()
    first = await AiortcViewer(server, "ssrc").start()
    second = await AiortcViewer(server, "ssrc", audio=True, video=True).start()
    try:
        await wait_until(lambda: first.frames["video"] >= 5 and second.frames["video"] >= 5, 20, "video on both")
        sessions = [s for s in server.stats()["sessions"].values() if s["kind"] == "whep"]
        ssrcs = [sub["ssrc"] for s in sessions for sub in s["subscriptions"]]
        assert len(ssrcs) == len(set(ssrcs)) == 4
    finally:
        await first.close()
        await second.close()
        await publisher.close()


@pytest.mark.parametrize("audio_first", [True, False])
async def test_audio_only_publisher_and_audio_video_viewer(server, audio_first):
    # aiortc bundles on its first m-section's transport, like Chromium: the section the stream
    # cannot feed is answered inactive inside the bundle, whichever comes first
    publisher = await AiortcPublisher(server, "radio", video=False).start()
    viewer = await AiortcViewer(server, "radio", audio_first=audio_first).start()
    try:
        # the answer keeps the video section in place, inactive, in the bundle
        sections = viewer.answer.split("\r\nm=")[1:]
        kinds = [section.split(" ", 1)[0] for section in sections]
        assert kinds == (["audio", "video"] if audio_first else ["video", "audio"])
        video = sections[kinds.index("video")]
        assert video.startswith("video 9 ") and "a=inactive" in video, viewer.answer
        await wait_until(lambda: viewer.frames["audio"] >= 20, 20, "audio frames")
    finally:
        await viewer.close()
        await publisher.close()


async def test_video_only_publisher(server):
    publisher = await AiortcPublisher(server, "mute", audio=False).start()
    viewer = await AiortcViewer(server, "mute").start()
    try:
        await wait_until(lambda: viewer.frames["video"] >= 10, 20, "video frames")
        sections = viewer.answer.split("\r\nm=")[1:]
        assert sections[1].startswith("audio 9 ") and "a=inactive" in sections[1], viewer.answer
    finally:
        await viewer.close()
        await publisher.close()


async def test_viewer_continues_across_publisher_reconnect(server):
    """A publisher that reconnects under the same name: the viewer keeps one continuous stream."""
    publisher = await AiortcPublisher(server, "again").start()
    viewer = await AiortcViewer(server, "again").start()
    try:
        await wait_until(lambda: viewer.frames["video"] >= 10, 20, "video before the reconnect")
        await publisher.close()
        before = viewer.frames["video"]
        publisher = await AiortcPublisher(server, "again").start()
        await wait_until(lambda: viewer.frames["video"] >= before + 10, 20, "video after the reconnect")
        session = next(s for s in server.stats()["sessions"].values() if s["kind"] == "whep")
        video = next(sub for sub in session["subscriptions"] if sub["kind"] == "video")
        assert video["switches"] >= 2  # re-attached to the new publisher's layer
    finally:
        await viewer.close()
        await publisher.close()


async def test_delete_ends_sessions_and_frees_the_stream(server):
    import aiohttp

    publisher = await AiortcPublisher(server, "gone").start()
    async with aiohttp.ClientSession() as http:
        token = server.mint_token("gone", publish=True)
        async with http.delete(publisher.location, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
        async with http.delete(publisher.location, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 404  # RFC 9725 §4.3: the session is gone
    assert "gone" not in server.stats()["streams"]
    await publisher.close()
