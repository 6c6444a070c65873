"""Graceful drain with a real browser (issue 13, point 3): a Chromium viewer of a real `sfu serve`
keeps decoding through SIGTERM while a new WHIP POST gets 503; the process exits 0 at the deadline."""
from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest

from e2e_helpers import VIDEO_DECODED, open_publisher, open_viewer, wait_for
from sfu.testing.process import ServeProcess

pytestmark = pytest.mark.e2e

DRAIN_S = 10


async def test_chromium_viewer_keeps_decoding_through_sigterm(context):
    async with ServeProcess("--drain-timeout", str(DRAIN_S)) as serve, aiohttp.ClientSession() as http:
        publisher = await open_publisher(context, serve, "drain")
        viewer = await open_viewer(context, serve, "drain")
        s = await wait_for(viewer, VIDEO_DECODED, what="decoded video", pages=[publisher])
        assert serve.proc is not None
        serve.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        headers = {"Authorization": f"Bearer {serve.mint_token('other', publish=True)}",
                   "Content-Type": "application/sdp"}
        deadline = sent + 10
        while True:  # the signal is handled asynchronously: wait for the refusal, with a deadline
            async with http.post(serve.whip_url("other"), data="v=0\r\n", headers=headers) as r:
                if r.status == 503:
                    assert 1 <= int(r.headers["Retry-After"]) <= DRAIN_S
                    break
            assert time.monotonic() < deadline, f"never refused while draining (last status {r.status})"
            await asyncio.sleep(0.1)
        decoded = s["video"]["framesDecoded"]
        after = await wait_for(viewer, f"s => s.video.framesDecoded >= {decoded + 60}",
                               timeout=DRAIN_S, what="60 more frames decoded while draining", pages=[publisher])
        assert serve.proc.returncode is None, "exited before the deadline with a viewer still watching"
        assert after["video"]["framesDecoded"] >= decoded + 60
        assert await serve.exit_code(DRAIN_S + 15) == 0
        assert time.monotonic() - sent >= DRAIN_S - 0.5
