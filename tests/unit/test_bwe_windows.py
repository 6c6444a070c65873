"""The estimator's windows in C (`_fastpath.EstimatorWindows`) against their Python reference
(`bwe_reference.ReferenceWindows`): identical doubles after every feedback, over random bursts
(overuse, underuse, reordering, loss, probe resets), and a bounded ring under a burst storm."""

from __future__ import annotations

import random

import pytest

from sfu import _fastpath
from sfu.core.bwe import SendSideBwe
from sfu.core.bwe_reference import ReferenceWindows

OUTPUTS = ("signal", "acked_bps", "delivery_ratio", "loss_fraction", "trend", "threshold_ms")


def _state(w) -> tuple:
    return tuple(getattr(w, name) for name in OUTPUTS)


def _feedbacks(seed: int, count: int):
    """Summaries as `(bursts, continues, matched, lost, now)`: a paced sender whose queue grows,
    drains and jitters, with late reports of earlier packets now and then."""
    rng = random.Random(seed)
    send = 1000.0 + rng.uniform(0, 100)
    delay = 0.03
    now = send
    for k in range(count):
        bursts = []
        for _ in range(rng.randint(0, 12)):
            send += rng.choice([0.001, 0.004, 0.006, 0.02, 0.033, rng.uniform(0, 0.2)])
            phase = (k // 40) % 3
            delay = max(0.0, delay + (0.002 if phase == 0 else -0.002 if phase == 1 else 0.0) + rng.gauss(0, 0.0005))
            spread = rng.uniform(0, 0.004)
            start = send - rng.uniform(0, 0.004)
            if rng.random() < 0.05:  # a late report of something sent earlier
                start -= rng.uniform(0.05, 0.5)
            arrival = send + delay
            bursts.append((start, send, arrival - spread, arrival, rng.randint(1, 12), rng.randint(60, 14000)))
        now = max(now, send) + rng.uniform(0.03, 0.15)
        matched = sum(b[4] for b in bursts) + rng.randint(0, 3)
        lost = rng.randint(0, matched) if rng.random() < 0.2 else 0
        yield bursts, rng.random() < 0.3, matched, lost, now


@pytest.mark.parametrize("seed", range(6))
def test_c_windows_equal_the_python_reference(seed: int) -> None:
    c, ref = _fastpath.EstimatorWindows(), ReferenceWindows()
    rng = random.Random(seed + 100)
    seen = set()
    for bursts, continues, matched, lost, now in _feedbacks(seed, 1500):
        assert c.add(bursts, continues, matched, lost, now) == ref.add(bursts, continues, matched, lost, now)
        assert _state(c) == _state(ref)
        seen.add(c.signal)
        if rng.random() < 0.01:
            c.clear_probe()
            ref.clear_probe()
            assert _state(c) == _state(ref)
    assert seen == {0, 1, 2}  # normal, overuse and underuse were all exercised
    assert c.delivery_ratio != 1.0 and c.loss_fraction > 0


def test_estimates_are_identical_with_either_windows() -> None:
    feedbacks = list(_feedbacks(7, 800))
    bwes = [SendSideBwe(2_000_000, 0.0), SendSideBwe(2_000_000, 0.0, ReferenceWindows())]
    for bursts, continues, matched, lost, now in feedbacks:
        summary = _Summary(bursts, continues, matched, lost)
        for bwe in bwes:
            bwe.on_feedback_summary(summary, now)
        assert bwes[0].estimate_bps == bwes[1].estimate_bps
        assert bwes[0].stats() == bwes[1].stats()
    assert bwes[0].decreases > 0


class _Summary:
    def __init__(self, bursts, continues, matched, lost) -> None:
        self.bursts, self.continues_group, self.matched, self.lost = bursts, continues, matched, lost
        self.feedbacks, self.max_send, self.probe_count, self.probe_lost = 1, bursts[-1][1] if bursts else -1.0, 0, 0


def test_a_burst_storm_is_bounded() -> None:
    """Thousands of bursts arriving within the windows (a queue draining at once): the ring stops
    growing at its maximum and the oldest bursts leave; the rates stay finite."""
    w = _fastpath.EstimatorWindows()
    t = 10.0
    for _ in range(100):
        bursts = [(t + i * 1e-4, t + i * 1e-4, t + 0.5, t + 0.5, 1, 1000) for i in range(100)]
        t += 0.01
        w.add(bursts, False, 100, 0, t + 0.5)
    held, capacity = w.bursts_held
    assert capacity == 2048 and held == capacity
    assert 0 < w.acked_bps < float("inf") and 0 < w.delivery_ratio <= 2.0
    small = _fastpath.EstimatorWindows()
    small.add([(1.0, 1.0, 1.1, 1.1, 1, 100)], False, 1, 0, 1.2)
    assert small.bursts_held == (1, 64)
