"""aiortc WHIP/WHEP clients and a deadline-based wait, shared by the integration tests."""


from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
from aiortc import AudioStreamTrack, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack





async def post_sdp(url: str, sdp: str, token: str | None = None, content_type: str = "application/sdp"):
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=sdp, headers=headers) as response:
            return response.status, await response.text(), response.headers.copy()


async def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until true or fail after `timeout` seconds (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class AiortcPublisher:
    """An aiortc publisher: test-pattern video (VP8 or H264) and/or audio over WHIP."""

    def __init__(self, server, stream: str, video: bool = True, audio: bool = True, codec: str | None = None):
        self.server, self.stream, self.video, self.audio, self.codec = server, stream, video, audio, codec
        self.pc = RTCPeerConnection()
        self.location = None

    async def start(self):
        if self.video:
            transceiver = self.pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
            if self.codec:
                from aiortc.rtcrtpsender import RTCRtpSender

                caps = RTCRtpSender.getCapabilities("video").codecs
                transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() in (f"video/{self.codec.lower()}", "video/rtx")])
        if self.audio:
            self.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        token = self.server.mint_token(self.stream, publish=True)
        status, body, headers = await post_sdp(self.server.whip_url(self.stream), self.pc.localDescription.sdp, token)
        assert status == 201, body
        self.location = headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        await wait_until(lambda: self.pc.connectionState == "connected", 10, "publisher connected")
        return self

    async def close(self):
        await self.pc.close()


class AiortcViewer:
    """An aiortc WHEP viewer that counts decoded frames per kind."""

    def __init__(self, server, stream: str, video: bool = True, audio: bool = True, query: str = "",
                 audio_first: bool = False):
        self.server, self.stream, self.video, self.audio, self.query = server, stream, video, audio, query
        self.audio_first = audio_first
        self.pc = RTCPeerConnection()
        self.frames: Counter[str] = Counter()
        self.sizes: set[tuple[int, int]] = set()
        self._tasks: list[asyncio.Task] = []
        self.answer = None

    async def start(self):
        kinds = [k for k, wanted in (("video", self.video), ("audio", self.audio)) if wanted]
        for kind in reversed(kinds) if self.audio_first else kinds:
            self.pc.addTransceiver(kind, direction="recvonly")

        @self.pc.on("track")
        def on_track(track):
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, body, _ = await post_sdp(self.server.whep_url(self.stream) + self.query, self.pc.localDescription.sdp)
        assert status == 201, body
        self.answer = body
        await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        return self

    async def _consume(self, track):
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            self.frames[track.kind] += 1
            if track.kind == "video":
                self.sizes.add((frame.width, frame.height))

    async def close(self):
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
