"""Waiting on a condition with a deadline, for tests: never a fixed sleep.

`wait_until` blocks the calling thread (sync tests); `await_until` is the same for coroutines.
Both return the predicate's first truthy value and raise `TimeoutError` naming the condition
(and, when given, what `describe()` says at the deadline) once `timeout` seconds have passed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_S = 0.01  # how often the predicate is evaluated


def _message(predicate: Callable[[], object], timeout: float, describe: Callable[[], object] | None) -> str:
    name = getattr(predicate, "__name__", repr(predicate))
    text = f"condition {name} not met within {timeout}s"
    if describe is not None:
        text += f": {describe()}"
    return text


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, *, interval: float = POLL_S,
               describe: Callable[[], object] | None = None) -> T:
    """Block until `predicate()` is truthy; return that value. TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(_message(predicate, timeout, describe))
        time.sleep(min(interval, remaining))


async def await_until(predicate: Callable[[], T], timeout: float = 10.0, *, interval: float = POLL_S,
                      describe: Callable[[], object] | None = None) -> T:
    """`wait_until` for coroutines: the event loop keeps running between evaluations."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(_message(predicate, timeout, describe))
        await asyncio.sleep(min(interval, remaining))
