"""The per-viewer bandwidth estimate and layer allocation against a seeded bottleneck link
(`netem_bwe`), on a fake clock: reaction to a rate drop and to loss, recovery, no oscillation."""

from __future__ import annotations

import pytest

from sfu.core.allocator import LayerOption, ManualLimit, VideoAllocator
from sfu.core.bwe import PacketResult, SendSideBwe

from netem_bwe import BROWSER_LAYERS, Link, ViewerSim


def test_rate_drop_is_followed_within_two_seconds() -> None:
    sim = ViewerSim(list(BROWSER_LAYERS), Link(5_000_000, seed=11))
    sim.run(10.0)
    assert sim.switches == [] and sim.layer_at(10.0) == "f"
    sim.link.rate_bps = 700_000
    sim.run(12.0)
    below = next(t for t, e in sim.estimates if t >= 10.0 and e < 700_000)
    assert below - 10.0 < 2.0, sim.estimates[-40:]
    down = next(t for t, rid in sim.switches if t >= 10.0)
    assert down - 10.0 < 2.0 and sim.layer_at(12.0) == "h"


def test_back_up_when_the_link_recovers_without_oscillating() -> None:
    sim = ViewerSim(list(BROWSER_LAYERS), Link(5_000_000, seed=12))
    sim.run(5.0)
    sim.link.rate_bps = 700_000
    sim.run(20.0)
    assert sim.layer_at(20.0) == "h"
    sim.link.rate_bps = 5_000_000
    sim.run(45.0)
    up = next(t for t, rid in sim.switches if t >= 20.0 and rid == "f")
    assert up - 20.0 < 15.0
    assert sim.switches_between(20.0, 45.0) == 1  # straight back up, and it stays


@pytest.mark.parametrize("rate,layer", [(800_000, "h"), (1_200_000, "h"), (5_000_000, "f"), (400_000, "q")])
def test_steady_link_at_most_one_switch_in_30_s(rate: int, layer: str) -> None:
    sim = ViewerSim(list(BROWSER_LAYERS), Link(rate, jitter_s=0.002, seed=rate))
    sim.run(30.0)
    assert len(sim.switches) <= 1, sim.switches
    assert sim.layer_at(30.0) == layer


def test_heavy_loss_lowers_the_estimate_and_light_loss_does_not() -> None:
    lossy = ViewerSim(list(BROWSER_LAYERS), Link(10_000_000, loss=0.25, seed=5))
    lossy.run(6.0)
    assert lossy.control.bwe.estimate_bps < 0.6 * 2_500_000
    assert lossy.layer_at(6.0) != "f"
    light = ViewerSim(list(BROWSER_LAYERS), Link(10_000_000, loss=0.01, seed=5))
    light.run(6.0)
    assert light.control.bwe.estimate_bps >= 2_500_000 and light.switches == []


def test_audio_is_served_before_video() -> None:
    """The video budget is the estimate minus audio: a layer that fits only without audio is not taken."""
    alloc = VideoAllocator()
    layers = [LayerOption(0, "q", 100_000), LayerOption(1, "h", 400_000)]
    key, reason, _ = alloc.decide(0.0, layers, budget_bps=450_000 - 64_000)
    assert key == 0 and reason == "initial"


def test_manual_limit_is_a_ceiling_and_unavailable_layers_are_skipped() -> None:
    layers = [LayerOption(0, "q", 150_000, 320, 180), LayerOption(1, "h", 500_000, 640, 360),
              LayerOption(2, "f", 1_500_000, 1280, 720)]
    alloc = VideoAllocator(limit=ManualLimit(layer="h"))
    assert alloc.decide(0.0, layers, 10_000_000)[0] == 1
    alloc = VideoAllocator(limit=ManualLimit(max_height=400))
    assert alloc.decide(0.0, layers, 10_000_000)[0] == 1
    alloc = VideoAllocator(limit=ManualLimit(layer="f"))
    assert alloc.decide(0.0, layers, 600_000)[0] == 1  # the estimate may go lower than the limit
    paused = [LayerOption(0, "q", 150_000), LayerOption(1, "h", 500_000), LayerOption(2, "f", 1_500_000, available=False)]
    alloc = VideoAllocator()
    assert alloc.decide(0.0, paused, 10_000_000)[0] == 1  # a browser paused its top layer
    assert VideoAllocator(limit=ManualLimit(paused=True)).decide(0.0, layers, 10_000_000)[0] is None


def test_hold_off_after_a_downgrade() -> None:
    layers = [LayerOption(0, "q", 150_000), LayerOption(1, "h", 500_000)]
    alloc = VideoAllocator(current=1)
    assert alloc.decide(0.0, layers, 300_000, congested=True)[0] == 1  # confirming
    key, reason, _ = alloc.decide(0.3, layers, 300_000, congested=True)
    assert (key, reason) == (0, "bandwidth-down")
    alloc.switched(0.3, key, reason)
    for t in (0.5, 1.5, 2.5, 3.5, 4.2):  # plenty of room again, but held
        assert alloc.decide(t, layers, 5_000_000)[0] == 0
    assert alloc.decide(4.4, layers, 5_000_000)[1] == "confirming-up"
    assert alloc.decide(5.5, layers, 5_000_000)[0] == 1
    # one noisy overuse (not congested) does not step down while close to the need
    alloc = VideoAllocator(current=1)
    assert alloc.decide(0.0, layers, 450_000, congested=False)[1] == "estimate-low"
    assert alloc.decide(1.0, layers, 450_000, congested=False)[0] == 1


def test_overuse_detector_reacts_to_a_growing_queue_only() -> None:
    bwe = SendSideBwe(2_000_000, 0.0)
    t = 0.0
    for _i in range(400):  # 1 Mbit/s paced, constant one-way delay
        bwe.on_feedback([PacketResult(t, t + 0.03, 1250)], t + 0.05)
        t += 0.01
    assert bwe.overuse_events == 0 and bwe.estimate_bps >= 2_000_000
    delay = 0.03
    for _i in range(100):  # the queue grows 2 ms per packet
        delay += 0.002
        bwe.on_feedback([PacketResult(t, t + delay, 1250)], t + delay + 0.02)
        t += 0.01
    assert bwe.overuse_events > 0 and bwe.estimate_bps < 1_000_000


SUMMARY_FIELDS = (
    "feedbacks", "malformed", "matched", "lost", "acked", "unknown", "duplicates", "acked_bytes", "max_send",
    "continues_group", "bursts", "probe_count", "probe_lost", "probe_bytes", "probe_first_size",
    "probe_first_send", "probe_first_arrival", "probe_last_send", "probe_last_arrival",
)


def _fields(summary) -> tuple:
    return tuple(getattr(summary, name) for name in SUMMARY_FIELDS)


@pytest.mark.parametrize("loss,jitter", [(0.0, 0.0), (0.03, 0.004)])
def test_fastpath_summaries_equal_the_python_reference(loss: float, jitter: float) -> None:
    """The same wire feedback through `_fastpath.FeedbackAggregator` (C) and through
    `FeedbackMatcher` + `SummaryBuilder` (Python): identical summaries, identical estimates,
    across a rate drop, probes and 16-bit sequence wrap."""
    sims = {}
    for mode in ("fastpath", "reference"):
        sim = ViewerSim(list(BROWSER_LAYERS), Link(5_000_000, loss=loss, jitter_s=jitter, seed=21), feedback=mode)
        sim.run(6.0)
        sim.link.rate_bps = 900_000
        sim.run(12.0)
        sims[mode] = sim
    fast, ref = sims["fastpath"], sims["reference"]
    assert fast.endpoint.twcc_next > 65_536  # wrapped
    assert len(fast.summaries) == len(ref.summaries) > 100
    for a, b in zip(fast.summaries, ref.summaries, strict=True):
        assert _fields(a) == _fields(b)
    assert sum(s.probe_count for s in fast.summaries) > 0 and fast.control.bwe.probes > 0
    assert any(s.continues_group for s in fast.summaries)
    assert fast.estimates == ref.estimates and fast.switches == ref.switches


def test_rate_drop_is_followed_through_the_fastpath_feedback() -> None:
    sim = ViewerSim(list(BROWSER_LAYERS), Link(5_000_000, seed=11), feedback="fastpath")
    sim.run(10.0)
    assert sim.switches == [] and sim.layer_at(10.0) == "f"
    sim.link.rate_bps = 700_000
    sim.run(12.0)
    below = next(t for t, e in sim.estimates if t >= 10.0 and e < 700_000)
    assert below - 10.0 < 2.0
    assert sim.layer_at(12.0) == "h"


@pytest.mark.parametrize("rate,later,feedback", [
    (5_000_000, 700_000, "records"), (5_000_000, 900_000, "fastpath"), (1_200_000, 1_200_000, "records"),
    (400_000, 5_000_000, "records"),
])
def test_event_driven_decisions_change_nothing(rate: int, later: int, feedback: str) -> None:
    """Deciding only when `ViewerRateControl.settled` says a decision could change something (as
    `SimulcastControl` does) gives the same targets, switches and estimates as deciding every
    tick, with a fraction of the decisions."""
    sims = []
    for event_driven in (False, True):
        sim = ViewerSim(list(BROWSER_LAYERS), Link(rate, jitter_s=0.002, loss=0.01, seed=rate), feedback=feedback,
                        event_driven=event_driven)
        sim.run(10.0)
        sim.link.rate_bps = later
        sim.run(40.0)
        sims.append(sim)
    every, events = sims
    assert events.targets == every.targets and events.switches == every.switches
    assert events.estimates == every.estimates
    assert every.decisions == len(every.targets) and events.decisions < every.decisions / 4, events.decisions
