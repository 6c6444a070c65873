"""Browser simulcast (rids q/h/f at 1280x720, scaled down by 4/2/1): one viewer pinned to each layer
gets that layer's resolution, for VP8 and for H.264."""
from __future__ import annotations

import asyncio
import time

import pytest

from e2e_helpers import open_publisher, open_viewer, wait_all, wait_for

pytestmark = pytest.mark.e2e

RIDS = ("q", "h", "f")  # lowest first
TOP_WIDTH_MIN = 960  # the f layer of a 1280x720 capture (Chromium may send it a little smaller)
ALL_LAYERS_TIMEOUT_S = 60.0  # the publisher ramps its bitrate up (server feedback) before sending f
LAYER_TIMEOUT_S = 30.0  # for every viewer to be on its layer once decoding
POLL_S = 0.2
STEADY_FRAMES = 20  # decoded on a viewer before its frame size is read


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_one_viewer_per_layer_gets_that_resolution(context, server, codec, capsys):
    publisher = await open_publisher(context, server, f"layers-{codec}", codec=codec, simulcast=True)
    # Chromium adds its simulcast layers as its bandwidth estimate grows: wait until all three are
    # really sent (frames encoded at a size), not just negotiated.
    sent = await wait_for(publisher, f"""s => {list(RIDS)!r}.every(r => s.outbound[r] &&
        s.outbound[r].bytesSent > 0 && s.outbound[r].framesSent > 0 && s.outbound[r].frameWidth > 0)""",
                          timeout=ALL_LAYERS_TIMEOUT_S, what="all three layers sent")
    assert {o["codec"].upper() for o in sent["outbound"].values() if o["kind"] == "video"} == {codec}, sent

    viewers = await asyncio.gather(*(open_viewer(context, server, f"layers-{codec}", layer=rid, render=False)
                                     for rid in RIDS))
    got = await wait_all(viewers, f"""s => s.video !== null && s.video.framesDecoded >= {STEADY_FRAMES} &&
        s.video.frameWidth > 0""", timeout=ALL_LAYERS_TIMEOUT_S, what=f"{STEADY_FRAMES} decoded frames")
    # `layer=` is a ceiling (the server may go lower while the viewer's bandwidth estimate is short):
    # wait, with a deadline, until every viewer decodes the layer it asked for.
    waited_from = time.monotonic()
    deadline = waited_from + LAYER_TIMEOUT_S
    first_layers = None
    while True:
        got = await asyncio.gather(*(v.stats() for v in viewers))
        sent = await publisher.stats()
        widths = [s["video"]["frameWidth"] for s in got]
        sent_widths = {rid: sent["outbound"][rid].get("frameWidth") or 0 for rid in RIDS}
        # Each viewer's width nearest to its own layer's (not equal: Chromium may scale its layers
        # down under CPU load between two reads).
        nearest = [min(RIDS, key=lambda r: abs(sent_widths[r] - w)) for w in widths]
        if first_layers is None:
            first_layers = widths, {sid: v["video_layer"] for sid, v in server.stats()["sessions"].items()
                                    if v["kind"] == "whep"}
        if nearest == list(RIDS) or time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL_S)
    layers = {sid: v["video_layer"] for sid, v in server.stats()["sessions"].items() if v["kind"] == "whep"}
    with capsys.disabled():
        print(f"\n{codec} simulcast: sent widths {sent_widths}; viewers q/h/f decode widths {widths} "
              f"(after {time.monotonic() - waited_from:.1f} s more)")
        if time.monotonic() - waited_from > 2:
            print(f"  at first: {first_layers}")

    for s in got:
        assert s["video"]["codec"].upper() == codec, s["video"]
    assert nearest == list(RIDS), (widths, sent_widths, layers)
    assert widths[0] < widths[1] < widths[2], (widths, sent_widths)
    assert widths[2] >= TOP_WIDTH_MIN, (widths, sent_widths)
