"""A viewer behind a real, degraded network: Chromium in its own network namespace (netns.py),
joined to the server by a veth pair whose host end is rate-limited (tc tbf) or whose namespace drops
a share of the server's datagrams (nftables); the publisher and a loss-free viewer stay in the root
namespace.

Measured figures (switch times, freezes, frame ratios, NACK counts) are printed; the assertions use
margins for a loaded 2-core CI machine, with the issue's targets named next to them.
"""
from __future__ import annotations

import asyncio
import math
import os
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e_helpers import (
    CHROMIUM_ARGS,
    VIDEO_DECODED,
    E2EFailure,
    open_publisher,
    open_viewer,
    wait_for,
)
from netns import ViewerNetns

import sfu
from sfu.core.sessions import public_id

pytestmark = pytest.mark.e2e

SIMULCAST_RIDS = ("q", "h", "f")
TOP_WIDTH_MIN = 960  # the f layer of a 1280x720 capture (Chromium may scale it down a little)
LOW_WIDTH_MAX = 400  # the q layer: 320 wide
RATE_LIMIT_KBIT = 300  # between the q layer (150 kbit/s + audio) and the h layer (500 kbit/s)
DOWNGRADE_TARGET_S = 5.0  # the target
DOWNGRADE_LIMIT_S = 10.0  # asserted: the target with room for a loaded 2-core CI machine
DOWNGRADE_EXTRA_FREEZES = 3  # freezes of the sudden congestion itself, before any switch (see the test)
UPGRADE_TARGET_S = 15.0
UPGRADE_LIMIT_S = 30.0
TOP_LAYER_TIMEOUT_S = 60.0  # the publisher ramps up to its top layer, then the viewer's estimate
LOSS_PERCENT = 5
LOSS_WINDOW_S = 20.0  # the deliberate observation window of the loss test
LOSS_FRAME_RATIO_MIN = 0.99  # lossy / loss-free frames decoded over the window (the target)
FREEZES_PER_MINUTE_TARGET = 1  # the target: printed, not reliably met (see below)
LOSS_WINDOW_FREEZES_MAX = 3  # asserted per window: a retransmission lost again (5 % of them) waits for
# Chromium's next NACK retry, which it times without an RTT estimate as a receive-only peer; 0-2
# such freezes per 20 s were measured once every first NACK was answered. The server's own repair
# counters are asserted exactly instead (nothing refused, nothing missing).
POLL_S = 0.1
SETTLE_S = 2.0  # kept on a layer after reaching it, so that the switch's freezes are counted
TRACE = bool(os.environ.get("SFU_E2E_TRACE"))  # print the rate test's timeline


# -- fixtures: a namespace, a server reachable from it, Chromium inside it


@pytest.fixture
async def netns(request: pytest.FixtureRequest) -> AsyncIterator[ViewerNetns]:
    async with ViewerNetns(request.node.originalname) as ns:
        yield ns


@pytest.fixture
async def net_server(netns: ViewerNetns) -> AsyncIterator[Any]:
    """The server on all IPv4 addresses (HTTP and UDP), advertising the veth's host end (what the
    viewer in the namespace reaches) and 127.0.0.1 (for the root namespace's clients)."""
    config = sfu.Config.for_tests()
    config.http_host = "0.0.0.0"
    config.udp_host = "0.0.0.0"
    config.public_ips = [netns.host_ip, "127.0.0.1"]
    async with sfu.Server(config) as server:
        yield server


class Origin:
    """The server seen from another origin: `http_url` is replaced (the rest is the server's).

    The publisher page loads from 127.0.0.1 (a secure context: getUserMedia needs one); the viewer
    in the namespace loads from the veth address (watching needs no secure context)."""

    def __init__(self, server: Any, host: str) -> None:
        self._server = server
        self.http_url = f"http://{host}:{server.http_port}"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


@pytest.fixture
async def netns_context(netns: ViewerNetns, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A browser context of headless Chromium running inside the namespace."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=netns.chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            ctx = await browser.new_context(ignore_https_errors=True)
            try:
                yield ctx
            finally:
                rep = getattr(request.node, "rep_call", None)
                if rep is not None and rep.failed:
                    print(f"namespace: {netns.describe()}", file=sys.stderr)
                    for page in ctx.pages:
                        cp = getattr(page, "_sfu_client", None)
                        if cp is not None:
                            print(await cp.describe(), file=sys.stderr)
                await ctx.close()
        finally:
            await browser.close()


# -- helpers


def session_id(stats: dict[str, Any]) -> str:
    """The name a page's session goes by in the server's stats: the public id derived from the
    (secret) session id at the end of the Location of its WHIP/WHEP session."""
    return public_id(urllib.parse.unquote(stats["location"].rstrip("/").rsplit("/", 1)[1]))


def video_layer(server: Any, sid: str) -> dict[str, Any]:
    return server.stats()["sessions"][sid]["video_layer"] or {}


@dataclass
class Sample:
    at: float
    width: int
    freezes: int
    frames: int
    layer: str | None
    target: str | None
    switches: int
    estimate_bps: int


async def sample(viewer: Any, server: Any, sid: str) -> Sample:
    s = await viewer.stats()
    v = s["video"] or {}
    layer = video_layer(server, sid)
    return Sample(time.monotonic(), v.get("frameWidth", 0), v.get("freezeCount", 0), v.get("framesDecoded", 0),
                  layer.get("current_layer"), layer.get("target_layer"), layer.get("switches", 0),
                  layer.get("estimate_bps", 0))


async def wait_sample(viewer: Any, server: Any, sid: str, cond: Any, timeout: float, what: str,
                      pages: tuple[Any, ...] = (), history: list[Sample] | None = None) -> Sample:
    """Poll until `cond(sample)`; fail after `timeout` with the last samples and the pages' state.
    Every sample is appended to `history` when given."""
    deadline = time.monotonic() + timeout
    history = [] if history is None else history
    while True:
        s = await sample(viewer, server, sid)
        history.append(s)
        if cond(s):
            return s
        if time.monotonic() >= deadline:
            details = [await p.describe() for p in (viewer, *pages)]
            trail = "\n".join(f"  {x}" for x in history[-30:])
            raise E2EFailure(f"timed out after {timeout:.0f} s waiting for {what}; last samples:\n{trail}\n"
                             f"server video_layer: {video_layer(server, sid)}\n" + "\n".join(details))
        await asyncio.sleep(POLL_S)


# -- tests


async def test_rate_limit_switches_layers_down_and_back_up(context, netns_context, net_server, netns, capsys):
    """Simulcast VP8 from the root namespace; a viewer on automatic layers in the namespace. Once it
    is on the top layer, 300 kbit/s towards it: it must step down to the lowest layer; lifted, it
    must come back to the top."""
    local = Origin(net_server, "127.0.0.1")
    publisher = await open_publisher(context, local, "rate", codec="VP8", simulcast=True)
    await wait_for(publisher, f"""s => {list(SIMULCAST_RIDS)!r}.every(r => s.outbound[r] &&
        s.outbound[r].bytesSent > 0 && s.outbound[r].frameWidth > 0)""", timeout=TOP_LAYER_TIMEOUT_S,
                   what="all three layers sent")
    viewer = await open_viewer(netns_context, net_server, "rate")
    first = await wait_for(viewer, VIDEO_DECODED, what="decoded video in the namespace", pages=[publisher])
    assert first["candidatePair"] and netns.host_ip in first["candidatePair"]["remote"], first["candidatePair"]
    sid = session_id(first)

    top = await wait_sample(viewer, net_server, sid, lambda s: s.width >= TOP_WIDTH_MIN and s.layer == "f",
                            TOP_LAYER_TIMEOUT_S, "the viewer on the top layer", (publisher,))

    timeline: list[Sample] = [top]
    await netns.limit_rate(RATE_LIMIT_KBIT)
    limited_at = time.monotonic()
    low = await wait_sample(viewer, net_server, sid, lambda s: s.layer == "q" and s.width <= LOW_WIDTH_MAX,
                            DOWNGRADE_LIMIT_S + 5, "the viewer on the lowest layer", (publisher,), timeline)
    down_s = low.at - limited_at
    # Stay on the lowest layer a little, so that the freezes of the switch are counted.
    settled_down = await wait_sample(viewer, net_server, sid, lambda s: s.at - low.at >= SETTLE_S, 10,
                                     "the lowest layer for a while", history=timeline)

    await netns.clear_rate()
    lifted_at = time.monotonic()
    back = await wait_sample(viewer, net_server, sid, lambda s: s.layer == "f" and s.width >= TOP_WIDTH_MIN,
                             UPGRADE_LIMIT_S + 5, "the viewer back on the top layer", (publisher,), timeline)
    up_s = back.at - lifted_at
    settled_up = await wait_sample(viewer, net_server, sid, lambda s: s.at - back.at >= SETTLE_S, 10,
                                   "the top layer for a while", history=timeline)

    down_switches = settled_down.switches - top.switches
    up_switches = settled_up.switches - settled_down.switches
    down_freezes = settled_down.freezes - top.freezes
    up_freezes = settled_up.freezes - settled_down.freezes
    trail = "\n".join(f"  {s.at - limited_at:6.2f} s {s.layer}->{s.target} {s.width}px freezes={s.freezes} "
                      f"frames={s.frames} switches={s.switches} estimate={s.estimate_bps}" for s in timeline)
    with capsys.disabled():
        print(f"\nrate limit {RATE_LIMIT_KBIT} kbit/s: top -> lowest layer in {down_s:.1f} s "
              f"(target {DOWNGRADE_TARGET_S:.0f} s), {down_switches} switch(es), {down_freezes} freeze(s); "
              f"lifted: lowest -> top in {up_s:.1f} s (target {UPGRADE_TARGET_S:.0f} s), "
              f"{up_switches} switch(es), {up_freezes} freeze(s); estimate {top.estimate_bps} -> "
              f"{settled_down.estimate_bps} -> {settled_up.estimate_bps} bit/s")
        if TRACE:
            print(trail)
    assert down_s <= DOWNGRADE_LIMIT_S, f"downgrade took {down_s:.1f} s\n{trail}"
    assert up_s <= UPGRADE_LIMIT_S, f"upgrade took {up_s:.1f} s\n{trail}"
    # Going down, the link is cut to a fifth of the top layer's rate at once: until the estimate
    # reacts (~0.5 s) and a lower layer's keyframe gets through, the tbf queue drops most of the top
    # layer and the few frames that still trickle through split one outage into several freezes.
    # Target: 1 per switch; allowed: DOWNGRADE_EXTRA_FREEZES more for the congestion itself.
    assert down_freezes <= max(1, down_switches) + DOWNGRADE_EXTRA_FREEZES, (
        f"{down_freezes} freezes, {down_switches} switches\n{trail}")
    assert up_freezes <= max(1, up_switches), f"{up_freezes} freezes, {up_switches} switches\n{trail}"


async def test_random_loss_repaired_by_nack(context, netns_context, net_server, netns, capsys):
    """5 % of the server's datagrams towards one viewer dropped: NACK repair keeps its decoded frames
    level with a loss-free viewer of the same stream over the same window."""
    local = Origin(net_server, "127.0.0.1")
    publisher = await open_publisher(context, local, "loss", codec="VP8")
    clean = await open_viewer(context, local, "loss")
    lossy = await open_viewer(netns_context, net_server, "loss")
    await wait_for(clean, "s => s.video !== null && s.video.framesDecoded >= 30", what="loss-free viewer playing",
                   pages=[publisher])
    await wait_for(lossy, "s => s.video !== null && s.video.framesDecoded >= 30", what="namespace viewer playing",
                   pages=[publisher])

    await netns.add_random_loss(LOSS_PERCENT, net_server.udp_port)
    start_lossy, start_clean = await asyncio.gather(lossy.stats(), clean.stats())
    t0 = time.monotonic()
    await asyncio.sleep(LOSS_WINDOW_S)  # the deliberate observation window
    end_lossy, end_clean = await asyncio.gather(lossy.stats(), clean.stats())
    window = time.monotonic() - t0
    dropped = await netns.loss_dropped()
    await netns.clear_loss()

    def delta(a: dict[str, Any], b: dict[str, Any], key: str) -> int:
        return int(b["video"].get(key, 0)) - int(a["video"].get(key, 0))

    lossy_frames = delta(start_lossy, end_lossy, "framesDecoded")
    clean_frames = delta(start_clean, end_clean, "framesDecoded")
    ratio = lossy_frames / clean_frames if clean_frames else 0.0
    nacks = delta(start_lossy, end_lossy, "nackCount")
    freezes = delta(start_lossy, end_lossy, "freezeCount")
    clean_freezes = delta(start_clean, end_clean, "freezeCount")
    lost = delta(start_lossy, end_lossy, "packetsLost")
    plis = delta(start_lossy, end_lossy, "pliCount")
    freeze_ms = 1000 * (end_lossy["video"].get("totalFreezesDuration", 0)
                        - start_lossy["video"].get("totalFreezesDuration", 0))
    repair = net_server.stats()["sessions"][session_id(end_lossy)]["repair"]
    allowed_freezes = max(LOSS_WINDOW_FREEZES_MAX, math.ceil(FREEZES_PER_MINUTE_TARGET * window / 60))
    with capsys.disabled():
        print(f"\n{LOSS_PERCENT} % random loss over {window:.1f} s ({dropped} datagrams dropped): frames decoded "
              f"lossy {lossy_frames} / loss-free {clean_frames} = {ratio:.3f} (min {LOSS_FRAME_RATIO_MIN}); "
              f"lossy nackCount +{nacks}, packetsLost +{lost}, freezes {freezes} ({freeze_ms:.0f} ms; loss-free {clean_freezes}), pliCount +{plis}; "
              f"server repair {repair}")
    assert dropped > 0, "the loss rule dropped nothing: is the viewer's media coming from another port?"
    assert clean_frames > 0
    assert ratio >= LOSS_FRAME_RATIO_MIN, f"lossy/loss-free frames {ratio:.3f}"
    assert nacks > 0
    # Every NACKed packet was answered at once: none refused as "recent" or rate-limited, none missing.
    video_repair = next(r for r in repair if r)  # per subscription; audio has no NACK here
    assert video_repair["requested"] > 0 and video_repair["sent"] == video_repair["requested"], repair
    assert video_repair["recent"] == 0 and video_repair["rate_limited"] == 0 and video_repair["missing"] == 0, repair
    # A freeze means a repair came late (e.g. the retransmission was lost too).
    assert freezes <= allowed_freezes, f"{freezes} freezes ({freeze_ms:.0f} ms) in {window:.0f} s; server repair {repair}"
