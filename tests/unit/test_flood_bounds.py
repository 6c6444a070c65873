"""Bounds against floods, sans-IO: unconnected sessions (core/admission.py, fake clock), the control
datagram queue of the media port (io/udp.py, fake router), the heap trim policy (io/memory.py)."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import pytest

from sfu import _fastpath
from sfu.core.admission import UnconnectedSessions
from sfu.io import udp
from sfu.io.memory import HeapTrimmer

# -- unconnected sessions -------------------------------------------------------------------------


def test_per_source_bound_refuses_only_that_source():
    policy = UnconnectedSessions(per_source=2, total=10, timeout_s=5.0)
    for i in range(2):
        assert policy.refusal("198.51.100.1", 0.0) is None
        policy.opened(f"a{i}", "198.51.100.1", 0.0)
    assert policy.refusal("198.51.100.1", 0.1) == "unconnected-per-source"
    assert policy.refusal("198.51.100.2", 0.1) is None
    assert policy.refused == Counter({"unconnected-per-source": 1})


def test_total_bound_counts_every_source_and_unknown_ones():
    policy = UnconnectedSessions(per_source=5, total=3, timeout_s=5.0)
    policy.opened("a", "198.51.100.1", 0.0)
    policy.opened("b", "198.51.100.2", 0.0)
    policy.opened("c", None, 0.0)  # an embedding application's call: the total only
    assert policy.refusal("198.51.100.3", 0.0) == "unconnected-total"
    assert policy.refusal(None, 0.0) == "unconnected-total"


def test_connected_and_closed_sessions_leave_the_bound():
    policy = UnconnectedSessions(per_source=1, total=1, timeout_s=5.0)
    policy.opened("a", "198.51.100.1", 0.0)
    assert policy.refusal("198.51.100.1", 0.0) is not None
    policy.connected("a")
    assert policy.refusal("198.51.100.1", 0.0) is None and len(policy) == 0
    policy.opened("b", "198.51.100.1", 0.0)
    policy.closed("b")
    policy.closed("b")  # idempotent
    assert policy.waiting_from("198.51.100.1") == 0 and policy.refusal("198.51.100.1", 0.0) is None


def test_stale_sessions_expire_in_order_on_the_fake_clock():
    policy = UnconnectedSessions(per_source=0, total=0, timeout_s=10.0)  # 0: no bound, still timed
    policy.opened("a", "198.51.100.1", 0.0)
    policy.opened("b", "198.51.100.1", 4.0)
    assert policy.next_deadline() == 10.0
    assert policy.expired(9.99) == []
    assert policy.expired(10.0) == ["a"]
    assert policy.next_deadline() == 14.0
    policy.connected("b")
    assert policy.expired(100.0) == [] and policy.next_deadline() is None
    assert policy.expired_count == 1


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        UnconnectedSessions(per_source=-1)
    with pytest.raises(ValueError):
        UnconnectedSessions(timeout_s=0)


# -- the media port's control queue -----------------------------------------------------------------


class _Router:
    def __init__(self, batches: list[list[tuple]]) -> None:
        self.batches = batches

    def on_readable(self, now: float):
        return self.batches.pop(0) if self.batches else None


class _Manager:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()


def test_control_queue_is_bounded_and_keeps_known_endpoints():
    loop = asyncio.new_event_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        port = udp.MediaPort(sock, loop)
        known = _fastpath.Endpoint(None)
        junk = [(_fastpath.KIND_STUN, None, b"\x00\x01junk", ("203.0.113.9", 1000 + i)) for i in range(5000)]
        batches = [junk + [(_fastpath.KIND_STUN, known, b"check-%d" % n, ("192.0.2.1", 5000))] for n in range(10)]
        port.router = _Router(batches)
        port.manager = _Manager()  # type: ignore[assignment]
        for _ in range(10):  # a flood faster than Python: drains, nothing handled in between
            port._drain()
        assert len(port._slow) <= udp.MAX_CONTROL_QUEUE
        kept_known = [item for item in port._slow if item[1] is known]
        assert len(kept_known) == 10  # every connectivity check of a real session got through
        assert port.manager.counters["control-queue-full"] == 10 * 5001 - len(port._slow)
    finally:
        sock.close()
        loop.close()


# -- heap trimming ------------------------------------------------------------------------------------


def test_heap_is_trimmed_after_a_burst_of_closes_and_not_too_often():
    calls: list[int] = []
    trimmer = HeapTrimmer(lambda pad: calls.append(pad) or 1, after_closes=100, min_interval_s=10.0)
    assert not trimmer.poll(99, 0.0)
    assert trimmer.poll(100, 0.0) and calls == [0]
    assert not trimmer.poll(250, 5.0)  # a burst, but the last trim is too recent
    assert trimmer.poll(250, 10.0)
    assert not trimmer.poll(300, 30.0)  # only 50 more since
    assert trimmer.trims == 2


def test_without_malloc_trim_nothing_happens():
    trimmer = HeapTrimmer(None, after_closes=1)
    trimmer._trim = None  # as on an allocator without malloc_trim
    assert not trimmer.available and not trimmer.poll(10**6, 1e9)
