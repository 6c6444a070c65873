"""An OBS-like GStreamer publisher (H.264 + Opus, RSA certificate, bundle-only, no candidates,
Bearer token, ignores keyframe requests) watched by headless Chromium."""
from __future__ import annotations

import pytest

from e2e_helpers import (
    AUDIO_RECEIVED,
    VIDEO_DECODED,
    GstPublisher,
    open_viewer,
    summarize_ms,
    time_to_first_frame,
    wait_for,
)

pytestmark = pytest.mark.e2e

TTFF_JOINS = 5
LONG_GOP_FRAMES = 150  # 5 s at 30 fps: a first frame faster than that comes from the keyframe cache


async def test_obs_like_publisher_watched_by_chromium(context, server):
    async with GstPublisher(server, "obs", key_int_max=60, ignore_pli=True):
        viewer = await open_viewer(context, server, "obs")
        s = await wait_for(viewer, VIDEO_DECODED, what="decoded video")
        assert s["video"]["codec"].upper() == "H264", s["video"]
        await wait_for(viewer, AUDIO_RECEIVED, what="received audio")
        await wait_for(viewer, "s => s.video.framesDecoded >= 30", what="30 decoded frames")


async def test_obs_like_publisher_ttff_long_gop(context, server, capsys):
    """Joins mid-GOP from a publisher that ignores PLI: printed, not asserted."""
    async with GstPublisher(server, "obs-gop", key_int_max=LONG_GOP_FRAMES, ignore_pli=True):
        samples = []
        for _ in range(TTFF_JOINS):
            viewer = await open_viewer(context, server, "obs-gop")
            samples.append(await time_to_first_frame(viewer))
            await viewer.stop()
            await viewer.close()
    with capsys.disabled():
        print(f"\nGStreamer H.264 publisher (GOP {LONG_GOP_FRAMES} frames, ignores PLI), "
              f"time to first frame: {summarize_ms(samples)}")
    assert len(samples) == TTFF_JOINS
