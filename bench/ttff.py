"""Time to first frame, Chromium-free: how long after its WHEP POST a viewer has a keyframe.

The publisher is a `PacketPublisher(ignore_pli=True, keyframe_interval=2.0)` (like OBS: PLIs
ignored, a keyframe every 2 s); each of `--joins` viewers (`PacketViewer`) joins at a random point
of the keyframe interval, and TTFF = first keyframe received - POST sent. Run once with the
keyframe cache and once without (`keyframe_cache=False`, i.e. `sfu serve --no-keyframe-cache`).

    .venv/bin/python bench/ttff.py [--joins 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics

import sfu
from sfu.testing.publisher import PacketPublisher
from sfu.testing.viewer import PacketViewer


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def measure(cache: bool, joins: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    config = dataclasses.replace(sfu.Config.for_tests(), keyframe_cache=cache)
    async with sfu.Server(config) as server:
        publisher = PacketPublisher(server.whip_url("ttff"), server.mint_token("ttff", publish=True),
                                    ignore_pli=True, keyframe_interval=2.0)
        await publisher.start()
        loop = asyncio.get_running_loop()
        results = []
        try:
            await asyncio.sleep(0.3)
            for _ in range(joins):
                await asyncio.sleep(rng.uniform(0.0, 2.0))  # a random phase of the GOP
                viewer = PacketViewer(server.whep_url("ttff"), audio=False)
                posted = loop.time()
                try:
                    await viewer.start()
                    await viewer.wait_for(lambda v=viewer: v.stats["video"]["first_keyframe_at"] is not None, 5.0)
                    results.append(viewer.stats["video"]["first_keyframe_at"] - posted)
                finally:
                    await viewer.stop()
        finally:
            await publisher.stop()
        return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"TTFF over {args.joins} joins; publisher ignores PLI, keyframe every 2.0 s")
    for cache in (True, False):
        values = await measure(cache, args.joins, args.seed)
        ms = [v * 1000 for v in values]
        print(f"  keyframe cache {'on ' if cache else 'off'}: p50 {percentile(ms, 50):7.1f} ms  "
              f"p95 {percentile(ms, 95):7.1f} ms  mean {statistics.mean(ms):7.1f} ms  max {max(ms):7.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
