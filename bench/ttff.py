"""Time to first frame, Chromium-free: how long after its WHEP POST a viewer has a keyframe.

The publisher is a `PacketPublisher(ignore_pli=True, keyframe_interval=...)` (like OBS: PLIs
ignored, a keyframe every 2 s by default; OBS setups often use 4-5 s, some 10 s); each of
`--joins` viewers (`PacketViewer`) joins at a random point of the keyframe interval, and TTFF =
first keyframe received - POST sent. Run once with the keyframe cache and once without
(`keyframe_cache=False`, i.e. `sfu serve --no-keyframe-cache`), per interval. With the cache, the
memory the video layer's cache holds (`cache_memory_bytes`, largest seen) is printed too.

    .venv/bin/python bench/ttff.py [--joins 20] [--seed 1] [--intervals 2,5,10] [--bitrate 1000000]
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


def cache_memory(server: sfu.Server) -> int:
    """Bytes the video layers' keyframe caches hold now (0 without the cache)."""
    total = 0
    for stream in server.stats()["streams"].values():
        for track in stream["tracks"]:
            for layer in track["layers"]:
                total += layer["repair"].get("cache_memory_bytes", 0)
    return total


async def measure(cache: bool, joins: int, seed: int, interval: float = 2.0,
                  bitrate: int = 1_000_000) -> tuple[list[float], int]:
    """TTFF of each join (s) and the largest cache memory seen (bytes)."""
    rng = random.Random(seed)
    config = dataclasses.replace(sfu.Config.for_tests(), keyframe_cache=cache)
    memory = 0
    async with sfu.Server(config) as server:
        publisher = PacketPublisher(server.whip_url("ttff"), server.mint_token("ttff", publish=True),
                                    ignore_pli=True, keyframe_interval=interval, bitrate=bitrate)
        await publisher.start()
        loop = asyncio.get_running_loop()
        results = []
        try:
            await asyncio.sleep(0.3)
            for _ in range(joins):
                await asyncio.sleep(rng.uniform(0.0, interval))  # a random phase of the GOP
                memory = max(memory, cache_memory(server))
                viewer = PacketViewer(server.whep_url("ttff"), audio=False)
                posted = loop.time()
                try:
                    await viewer.start()
                    await viewer.wait_for(lambda v=viewer: v.stats["video"]["first_keyframe_at"] is not None,
                                          interval + 5.0)
                    results.append(viewer.stats["video"]["first_keyframe_at"] - posted)
                finally:
                    await viewer.stop()
        finally:
            await publisher.stop()
        return results, memory


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--intervals", default="2", help="keyframe intervals in seconds, comma-separated")
    parser.add_argument("--bitrate", type=int, default=1_000_000, help="the publisher's video bit/s")
    args = parser.parse_args()
    for interval in (float(x) for x in args.intervals.split(",")):
        print(f"TTFF over {args.joins} joins; publisher ignores PLI, keyframe every {interval:.1f} s, "
              f"{args.bitrate / 1e6:.1f} Mbit/s")
        for cache in (True, False):
            values, memory = await measure(cache, args.joins, args.seed, interval, args.bitrate)
            ms = [v * 1000 for v in values]
            extra = f"  cache memory {memory / 2**20:.2f} MiB" if cache else ""
            print(f"  keyframe cache {'on ' if cache else 'off'}: p50 {percentile(ms, 50):7.1f} ms  "
                  f"p95 {percentile(ms, 95):7.1f} ms  mean {statistics.mean(ms):7.1f} ms  max {max(ms):7.1f} ms"
                  f"{extra}")


if __name__ == "__main__":
    asyncio.run(main())
