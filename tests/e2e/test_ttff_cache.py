"""The keyframe cache shortens the time to first frame from a publisher that ignores keyframe
requests (OBS-like GStreamer, a keyframe every 2 s): 20 Chromium joins with the cache, 20 without;
and with a 5 s and a 10 s interval, 8 joins each with the cache.

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
LONG_JOINS = 8  # per long interval, cache on only
PHASE_BUDGET_S = 90.0  # one configuration's joins; the whole file stays under ~2.5 minutes


async def measure_joins(context: Any, cache: bool, key_int_max: int = KEY_INT_MAX, joins: int = JOINS,
                        budget_s: float = PHASE_BUDGET_S) -> list[float]:
    config = sfu.Config.for_tests()
    config.keyframe_cache = cache
    stream = f"ttff-{'cache' if cache else 'nocache'}-{key_int_max}"
    gop_s = key_int_max / 30
    samples: list[float] = []
    async with sfu.Server(config) as server:
        async with GstPublisher(server, stream, key_int_max=key_int_max, ignore_pli=True):
            started = time.monotonic()
            for i in range(joins):
                # Sequential joins would otherwise be phase-locked to the GOP (each one starts a fixed
                # time after the previous one's first frame, i.e. after a keyframe): spread the join
                # times over one GOP instead, deterministically.
                await asyncio.sleep((i * 7 % joins) / joins * gop_s)
                assert time.monotonic() - started < budget_s, (
                    f"{i} joins in {budget_s:.0f} s (keyframe_cache={cache}): {samples}")
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


@pytest.mark.parametrize("key_int_max", [150, 300])
async def test_keyframe_cache_with_long_keyframe_intervals(context, capsys, key_int_max):
    """OBS setups with a 5 s or 10 s keyframe interval: every join (spread over the group) starts
    from the cache, sized by the interval (_repair.pxi). Figures printed, not asserted."""
    samples = await measure_joins(context, True, key_int_max, LONG_JOINS, budget_s=LONG_JOINS * key_int_max / 30 + 40)
    with capsys.disabled():
        print(f"\nGStreamer H.264, keyframe every {key_int_max / 30:.0f} s, ignores PLI, keyframe_cache=True: "
              f"{summarize_ms(samples)} (nearest-rank p50 {percentile(samples, 50):.0f} ms, "
              f"p95 {percentile(samples, 95):.0f} ms)")
    assert len(samples) == LONG_JOINS
