"""The keyframe cache shortens the time to first frame from a publisher that ignores keyframe
requests (OBS-like GStreamer, a keyframe every 2 s): 20 Chromium joins with the cache, 20 without.

Only the comparison is asserted (cache median below no-cache median) and that every join got a
frame; the figures are printed. Without the cache a join waits for the publisher's next keyframe
(about half a GOP on average: the joins are spread over the GOP); with it, it starts from the
cached one.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from e2e_helpers import GstPublisher, open_viewer, percentile, summarize_ms, time_to_first_frame

import sfu

pytestmark = pytest.mark.e2e

JOINS = 20  # per configuration, sequential
KEY_INT_MAX = 60  # frames between keyframes: 2 s at 30 fps
JOIN_TIMEOUT_S = 15.0  # several GOPs: a join without a frame by then is a failure
GOP_S = KEY_INT_MAX / 30
PHASE_BUDGET_S = 90.0  # one configuration's joins; the whole file stays under ~2.5 minutes


async def measure_joins(context: Any, cache: bool) -> list[float]:
    config = sfu.Config.for_tests()
    config.keyframe_cache = cache
    stream = f"ttff-{'cache' if cache else 'nocache'}"
    samples: list[float] = []
    async with sfu.Server(config) as server:
        async with GstPublisher(server, stream, key_int_max=KEY_INT_MAX, ignore_pli=True):
            started = time.monotonic()
            for i in range(JOINS):
                # Sequential joins would otherwise be phase-locked to the GOP (each one starts a fixed
                # time after the previous one's first frame, i.e. after a keyframe): spread the join
                # times over one GOP instead, deterministically.
                await asyncio.sleep((i * 7 % JOINS) / JOINS * GOP_S)
                assert time.monotonic() - started < PHASE_BUDGET_S, (
                    f"{i} joins in {PHASE_BUDGET_S:.0f} s (keyframe_cache={cache}): {samples}")
                viewer = await open_viewer(context, server, stream, render=False)
                samples.append(await time_to_first_frame(viewer, timeout=JOIN_TIMEOUT_S))
                await viewer.stop()
                await viewer.close()
    return samples


async def test_keyframe_cache_shortens_time_to_first_frame(context, capsys):
    with_cache = await measure_joins(context, cache=True)
    without_cache = await measure_joins(context, cache=False)
    p50_cache, p50_none = percentile(with_cache, 50), percentile(without_cache, 50)
    with capsys.disabled():
        print(f"\nGStreamer H.264, keyframe every {KEY_INT_MAX} frames, ignores PLI; time to first frame:\n"
              f"  keyframe_cache=True:  {summarize_ms(with_cache)} (nearest-rank p50 {p50_cache:.0f} ms, "
              f"p95 {percentile(with_cache, 95):.0f} ms)\n"
              f"  keyframe_cache=False: {summarize_ms(without_cache)} (nearest-rank p50 {p50_none:.0f} ms, "
              f"p95 {percentile(without_cache, 95):.0f} ms)")
    assert len(with_cache) == JOINS and len(without_cache) == JOINS
    assert p50_cache < p50_none, (with_cache, without_cache)
