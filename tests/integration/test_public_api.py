"""GET /api/streams and /api/streams/{name}: what the pages read, and nothing secret."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from aiortc_clients import AiortcPublisher, AiortcViewer, wait_until


async def _get(url: str) -> tuple[int, dict | str, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            body = await response.json() if response.content_type == "application/json" else await response.text()
            return response.status, body, dict(response.headers)


async def test_live_stream_listed_with_viewers_and_layers(server):
    publisher = await AiortcPublisher(server, "shop").start()
    viewer = await AiortcViewer(server, "shop").start()
    try:
        await wait_until(lambda: viewer.frames["video"] > 3, 20, "viewer decodes video")
        stream: dict = {}

        async def poll() -> bool:
            nonlocal stream
            _, stream, _ = await _get(server.http_url + "/api/streams/shop")
            return bool(stream["layers"]) and stream["layers"][0]["viewers"] == 1 and bool(stream["layers"][0]["bitrate_bps"])

        deadline = time.monotonic() + 15  # the summary is cached for up to a second
        while not await poll():
            assert time.monotonic() < deadline, stream
            await asyncio.sleep(0.1)
        assert stream["live"] is True and stream["viewers"] == 1 and stream["audio"] and stream["video"], stream
        (layer,) = stream["layers"]
        assert layer["rid"] == "video" and layer["simulcast"] is False and layer["codec"] == "VP8", layer
        assert layer["width"] == 640 and layer["bitrate_bps"] > 0 and layer["fps"] > 0, layer

        status, listed, headers = await _get(server.http_url + "/api/streams")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        assert listed == {"streams": [stream]}

        # Nothing that controls or names a session: no session ids, handles, participants or addresses.
        text = str(listed)
        for session_id, session in server.manager.sessions.items():
            assert session_id not in text and session.handle not in text
        assert "127.0.0.1" not in text
    finally:
        await viewer.close()
        await publisher.close()


async def test_unknown_stream_is_not_live_and_bad_names_are_refused(server):
    status, body, _ = await _get(server.http_url + "/api/streams/nobody")
    assert status == 200
    assert body == {"name": "nobody", "live": False, "viewers": 0, "audio": False, "video": False, "layers": []}
    status, listed, _ = await _get(server.http_url + "/api/streams")
    assert (status, listed) == (200, {"streams": []})
    status, text, _ = await _get(server.http_url + "/api/streams/bad%20name")
    assert status == 400 and "stream name" in text
