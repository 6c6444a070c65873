"""Loss repair and instant first frame on loopback with the packet-level clients."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

import sfu
from sfu.testing.publisher import PacketPublisher
from sfu.testing.viewer import PacketViewer

RUN_S = 3.0


async def _run(server, stream: str, publisher_drop: float = 0.0, viewer_drop: float = 0.0, rtx: bool = False):
    publisher = PacketPublisher(server.whip_url(stream), server.mint_token(stream, publish=True),
                                drop_rate=publisher_drop, drop_seed=7)
    await publisher.start()
    viewer = PacketViewer(server.whep_url(stream), drop_rate=viewer_drop, drop_seed=3, rtx=rtx)
    try:
        await viewer.start()
        await asyncio.sleep(RUN_S)  # the observation window (a measured interval, not a wait)
        # Stop losing, keep the publisher up so NACKs for the last losses can still be answered,
        # and wait (with a deadline) until every gap is repaired before tearing down.
        publisher.drop_rate = viewer.drop_rate = 0.0
        await viewer.wait_for(lambda: viewer.stats["video"]["lost"] == 0, 10.0)
        await publisher.stop()
        return publisher, viewer, server.stats()
    finally:
        await viewer.stop()
        await publisher.stop()


@pytest.mark.parametrize("rtx", [False, True], ids=["same-ssrc", "rtx"])
async def test_viewer_with_5_percent_loss_recovers_everything_by_nack(server, rtx):
    _, viewer, stats = await _run(server, "lossy-viewer", viewer_drop=0.05, rtx=rtx)
    video = viewer.stats["video"]
    assert viewer.stats["dropped_by_test"] >= 5
    assert video["gaps"] >= 5 and video["lost"] == 0 and video["lost_final"] == 0
    assert video["repaired"] == video["gaps"]
    if rtx:
        assert video["rtx"] >= video["gaps"]
    repair = stats["repair"]
    assert repair["nacks_received"] >= 1 and repair["retransmissions_served"] >= video["gaps"]


async def test_publisher_with_5_percent_loss_is_nacked_and_viewer_sees_no_final_loss(server):
    publisher, viewer, stats = await _run(server, "lossy-publisher", publisher_drop=0.05)
    assert publisher.stats["dropped_by_test"] >= 5
    assert publisher.stats["nacks_received"] >= 1 and publisher.stats["retransmits"] >= publisher.stats["dropped_by_test"] - 1
    video = viewer.stats["video"]
    assert video["lost"] == 0 and video["lost_final"] == 0
    # The server forwards each publisher retransmission once (its received bitmap drops repeats).
    # The viewer NACKs the same gaps too; under load its retry can cross the repaired packet, and the
    # server then answers it from its store: at most one extra copy per packet the viewer NACKed.
    assert video["duplicates"] <= viewer.stats["nacked_seqs"]
    assert stats["repair"]["nacks_sent"] >= 1


async def _ttff(cache: bool) -> float:
    config = dataclasses.replace(sfu.Config.for_tests(), keyframe_cache=cache)
    async with sfu.Server(config) as server:
        publisher = PacketPublisher(server.whip_url("ttff"), server.mint_token("ttff", publish=True),
                                    ignore_pli=True, keyframe_interval=2.0)
        await publisher.start()
        try:
            await asyncio.sleep(0.5)  # the next keyframe is ~1.5 s away
            viewer = PacketViewer(server.whep_url("ttff"), audio=False)
            loop = asyncio.get_running_loop()
            posted = loop.time()
            try:
                await viewer.start()
                await viewer.wait_for(lambda: viewer.stats["video"]["first_keyframe_at"] is not None, 5.0)
                return viewer.stats["video"]["first_keyframe_at"] - posted
            finally:
                await viewer.stop()
        finally:
            await publisher.stop()


async def test_first_frame_from_the_keyframe_cache_even_when_the_publisher_ignores_pli():
    with_cache = await _ttff(True)
    without = await _ttff(False)
    print(f"\nTTFF (publisher ignores PLI, keyframe every 2 s): {with_cache * 1000:.0f} ms with the cache, "
          f"{without * 1000:.0f} ms without")
    assert with_cache < 1.0  # ~25 ms on loopback; generous for CI
