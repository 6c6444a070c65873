"""A seeded network emulator on a fake clock: delay, jitter, loss, duplication, reordering.

Driven by `send(now, item)` and `receive(now)` (items whose arrival time has come, in arrival
order); `next_arrival()` is the one deadline. Same seed, same run: tests assert exact outcomes.
Reordering comes from jitter (each item's delay is drawn independently) plus an explicit
`reorder` share that gets `reorder_delay` extra.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Link:
    delay: float = 0.025  # one-way, seconds
    jitter: float = 0.0  # uniform +- seconds
    loss: float = 0.0  # share of items dropped
    duplicate: float = 0.0  # share of items delivered twice
    reorder: float = 0.0  # share of items held back by `reorder_delay`
    reorder_delay: float = 0.02
    seed: int = 1
    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _queue: list[tuple[float, int, Any]] = field(default_factory=list, repr=False)
    _order: Any = field(default_factory=itertools.count, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def send(self, now: float, item: Any) -> bool:
        """Put `item` on the wire at `now`; False when it is lost."""
        self.sent += 1
        rng = self._rng
        if rng.random() < self.loss:
            self.lost += 1
            return False
        copies = 2 if rng.random() < self.duplicate else 1
        self.duplicated += copies - 1
        for _ in range(copies):
            at = now + self.delay + (rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
            if self.reorder and rng.random() < self.reorder:
                at += self.reorder_delay
            heapq.heappush(self._queue, (max(at, now), next(self._order), item))
        return True

    def receive(self, now: float) -> list[Any]:
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(heapq.heappop(self._queue)[2])
        return out

    def next_arrival(self) -> float | None:
        return self._queue[0][0] if self._queue else None
