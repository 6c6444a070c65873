"""The trendline's incremental least-squares slope (`bwe_reference._SlopeWindow`, mirrored in C by
`_fastpath.EstimatorWindows`) against the direct formula (`bwe_reference._slope`) over random
sequences, through many window evictions and recentrings."""

from __future__ import annotations

import random
from collections import deque

import pytest

from sfu.core.bwe import TRENDLINE_WINDOW
from sfu.core.bwe_reference import _slope, _SlopeWindow


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == pytest.approx(b, rel=1e-7, abs=1e-12)  # both forms round; the direct one too


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("size", [2, 5, TRENDLINE_WINDOW])
def test_incremental_slope_matches_direct(seed: int, size: int) -> None:
    rng = random.Random(seed)
    window = _SlopeWindow(size)
    direct: deque[tuple[float, float]] = deque(maxlen=size)
    x = rng.uniform(0, 1e6)  # far from 0: ms since the first arrival, hours into a call
    y = rng.uniform(-50, 50)
    for _ in range(1000):
        x += rng.choice([rng.uniform(0.1, 40.0), rng.uniform(0, 2000.0)])
        y = 0.9 * y + 0.1 * (y + rng.gauss(0, 5.0)) + rng.choice([0.0, rng.uniform(-20, 20)])
        window.append(x, y)
        direct.append((x, y))
        assert len(window) == len(direct)
        assert _close(window.slope(), _slope(direct))
        flat = [v for point in window for v in point]
        assert flat == pytest.approx([v for point in direct for v in point], rel=1e-12, abs=1e-9)


def test_constant_y_is_exactly_flat_and_equal_x_has_no_slope() -> None:
    window = _SlopeWindow(TRENDLINE_WINDOW)
    for i in range(3 * TRENDLINE_WINDOW + 7):
        window.append(1000.0 + 7.5 * i, 0.0)
        assert window.slope() in (None, 0.0)
    assert window.slope() == 0.0  # the trendline then keeps its previous trend, as before
    same = _SlopeWindow(4)
    for _ in range(9):
        same.append(123.25, 1.0)
        assert same.slope() is None


def test_slope_of_a_line() -> None:
    window = _SlopeWindow(TRENDLINE_WINDOW)
    for i in range(50):
        window.append(5e5 + 10.0 * i, 3.0 - 0.25 * 10.0 * i)
    assert window.slope() == pytest.approx(-0.25, rel=1e-12)
