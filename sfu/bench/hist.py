"""A mergeable latency histogram: exact to the microsecond under 1 ms, 3 significant digits above.

Buckets are plain dict keys (microseconds), so histograms from several processes merge by adding
counts, and travel as JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def bucket(us: int) -> int:
    """The bucket (a value in µs) that `us` is counted in."""
    if us < 1000:
        return us if us > 0 else 0
    scale = 10 ** (len(str(us)) - 3)
    return us // scale * scale


def merge(into: dict[int, int], other: Mapping[int | str, int]) -> dict[int, int]:
    for key, count in other.items():
        k = int(key)
        into[k] = into.get(k, 0) + count
    return into


def percentiles(hist: Mapping[int, int], points: Iterable[float]) -> dict[float, float | None]:
    """Value in ms at each percentile (nearest rank), None for an empty histogram."""
    total = sum(hist.values())
    points = list(points)
    if not total:
        return {p: None for p in points}
    ordered = sorted(hist.items())
    out: dict[float, float | None] = {}
    for p in points:
        rank = max(1, -(-total * p // 100))  # ceil(total * p / 100)
        seen = 0
        for value, count in ordered:
            seen += count
            if seen >= rank:
                out[p] = value / 1000.0
                break
    return out


def summary(hist: Mapping[int, int]) -> dict[str, float | int | None]:
    pct = percentiles(hist, (50, 95, 99, 99.9))
    total = sum(hist.values())
    return {
        "samples": total,
        "p50": pct[50], "p95": pct[95], "p99": pct[99], "p99_9": pct[99.9],
        "max": (max(hist) / 1000.0) if total else None,
        "mean": (sum(k * v for k, v in hist.items()) / total / 1000.0) if total else None,
    }
