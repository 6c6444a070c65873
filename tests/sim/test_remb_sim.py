"""A viewer with REMB but no transport-wide feedback (sfu/core/remb.py) on a fake clock: its layer
follows its REMB down and up, receiver-report loss bounds the estimate, probes are judged by REMB."""

from __future__ import annotations

import pytest

from sfu.core.allocator import INITIAL_ESTIMATE_BPS, LayerOption, ViewerRateControl
from sfu.core.remb import PROBE_WAIT_S, RembEstimate

LAYERS = [LayerOption("q", "q", 150_000, 320, 180), LayerOption("h", "h", 500_000, 640, 360),
          LayerOption("f", "f", 1_500_000, 1280, 720)]
AUDIO_BPS = 40_000
TICK_S = 0.05


class RembViewer:
    """ViewerRateControl(remb_only=True) ticking every 50 ms; the test plays the receiver, sending
    REMB once a second (and at once when its value changes), plus receiver reports."""

    def __init__(self) -> None:
        self.control = ViewerRateControl(0.0, remb_only=True)
        self.now = 0.0
        self.remb = None
        self.loss = 0.0
        self.target = None
        self.layers: list[tuple[float, object]] = []
        self.padding = 0

    def set_remb(self, bps: int) -> None:
        self.remb = bps
        self.control.on_remb(bps, self.now)  # libwebrtc sends a REMB at once when it drops

    def run(self, until: float) -> None:
        next_remb = self.now + 1.0
        while self.now < until:
            self.now = round(self.now + TICK_S, 6)
            if self.remb is not None and self.now >= next_remb:
                self.control.on_remb(self.remb, self.now)
                self.control.on_receiver_loss(self.loss, self.now)
                next_remb = self.now + 1.0
            sent = (next(o.bitrate_bps for o in LAYERS if o.key == self.target) if self.target else 0) + AUDIO_BPS
            decision = self.control.decide(self.now, LAYERS, AUDIO_BPS, sent)
            self.padding += decision.padding_bytes
            if decision.target != self.target:
                self.target = decision.target
                self.layers.append((self.now, decision.target))


def test_layer_follows_remb_down_and_up() -> None:
    v = RembViewer()
    v.run(1.0)
    assert v.target == "f" and v.control.bwe.estimate_bps == INITIAL_ESTIMATE_BPS  # no REMB yet
    v.set_remb(2_000_000)
    v.run(5.0)
    assert v.target == "f"
    v.set_remb(600_000)  # the receiver's link dropped: h (525 k) fits next to audio, f does not
    v.run(6.0)
    down = next(t for t, key in v.layers if t > 5.0)
    assert down - 5.0 <= 0.5 and v.target == "h"
    v.set_remb(250_000)  # further: only q
    v.run(8.0)
    assert v.target == "q"
    v.set_remb(3_000_000)  # recovered: back up one layer at a time, after the hold-off
    v.run(25.0)
    assert v.target == "f"
    ups = [(t, key) for t, key in v.layers if t > 8.0]
    assert [key for _, key in ups] == ["h", "f"], v.layers
    assert v.control.bwe.stats()["feedback"] == "remb" and v.control.bwe.stats()["remb_drops"] == 2


def test_steady_remb_no_oscillation() -> None:
    v = RembViewer()
    v.set_remb(800_000)
    v.run(30.0)
    assert [key for _, key in v.layers] == ["h"], v.layers  # first REMB at t=0 before the first decision


def test_receiver_report_loss_bounds_the_estimate() -> None:
    bwe = RembEstimate(2_500_000, 0.0)
    bwe.on_remb(2_000_000, 0.0)
    bwe.on_loss(0.2, 1.0)  # 20 % lost: cut by half the loss fraction
    assert bwe.estimate_bps == pytest.approx(2_000_000 * 0.9)
    bwe.on_loss(0.2, 1.1)  # at most one cut per LOSS_DECREASE_INTERVAL_S
    assert bwe.estimate_bps == pytest.approx(2_000_000 * 0.9)
    bwe.on_loss(0.2, 2.0)
    assert bwe.estimate_bps == pytest.approx(2_000_000 * 0.81)
    assert bwe.congested(2.0)
    bwe.on_loss(0.05, 3.0)  # between 2 % and 10 %: hold
    assert bwe.estimate_bps == pytest.approx(2_000_000 * 0.81)
    for t in range(4, 20):
        bwe.on_loss(0.0, float(t))  # loss gone: the bound grows 8 %/s and is lifted above 1.5x REMB
    assert bwe.loss_bps == float("inf") and bwe.estimate_bps == 2_000_000


def test_layer_steps_down_on_receiver_report_loss_alone() -> None:
    v = RembViewer()
    v.set_remb(2_000_000)
    v.run(3.0)
    assert v.target == "f"
    v.loss = 0.3  # the receiver still says 2 Mbit/s but loses 30 %
    v.run(8.0)
    assert v.target in ("h", "q") and v.control.bwe.estimate_bps < 1_500_000


def test_probe_judged_by_the_next_rembs() -> None:
    bwe = RembEstimate(2_500_000, 0.0)
    bwe.on_remb(400_000, 0.0)
    bwe.start_probe(700_000, 1.0, 1.3)
    assert bwe.probing
    bwe.on_remb(500_000, 1.2)
    bwe.poll(1.4)
    assert bwe.probing  # still waiting for a REMB that shows the probe
    bwe.on_remb(650_000, 1.8)  # >= 90 % of the target
    bwe.poll(1.85)
    result = bwe.take_probe_result()
    assert result is not None and result.success and not bwe.probing
    bwe.start_probe(1_500_000, 3.0, 3.3)
    bwe.on_remb(700_000, 3.5)
    bwe.poll(3.3 + PROBE_WAIT_S + 0.01)
    result = bwe.take_probe_result()
    assert result is not None and not result.success and bwe.probes == 2 and bwe.probes_succeeded == 1
