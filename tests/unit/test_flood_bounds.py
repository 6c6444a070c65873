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


# -- remote addresses per peer ----------------------------------------------------------------------


def _check(ice_local: tuple[str, str], remote_ufrag: str) -> bytes:
    from sfu.wire import stun

    return stun.binding_request(f"{ice_local[0]}:{remote_ufrag}", ice_local[1], use_candidate=False,
                                priority=1, controlling=True, tie_breaker=1)[1]


def test_valid_checks_from_many_addresses_are_bounded_and_lapsed_ones_forgotten():
    from sfu.core.ice import MAX_ADDRESSES, IceLite

    ice = IceLite("lufrag01", "l" * 32, "rufrag01", "r" * 32, now=0.0)
    local = ("lufrag01", "l" * 32)
    answered = [ice.receive_binding(_check(local, "rufrag01"), ("192.0.2.7", 1000 + i), 1.0) is not None
                for i in range(MAX_ADDRESSES + 5)]
    assert answered == [True] * MAX_ADDRESSES + [False] * 5  # the attacker's own session, every port
    assert ice.drops["too-many-addresses"] == 5
    ice.handle_timer(1.0 + ice.consent_timeout + 0.1)  # they all lapse (none checked again)
    assert ice.expired  # (nothing alive is left: the session ends)


def test_a_peer_forgets_addresses_whose_consent_lapsed():
    from sfu.core.certificate import Certificate
    from sfu.core.peer import AddressForgotten, AddressValidated, Peer

    cert = Certificate.generate(0.0, lifetime_days=2)
    peer = Peer("p", cert, "rufrag01", "r" * 32, [("sha-256", cert.fingerprint_sha256())], 0.0,
                "lufrag01", "l" * 32)
    local = ("lufrag01", "l" * 32)
    peer.receive_stun(_check(local, "rufrag01"), ("192.0.2.7", 1000), 1.0)
    for t in range(2, 40):  # the first address keeps checking ...
        peer.receive_stun(_check(local, "rufrag01"), ("192.0.2.7", 1001), float(t))
        peer.handle_timer(float(t))
    events = peer.take_events()
    assert AddressValidated(("192.0.2.7", 1000)) in events and AddressValidated(("192.0.2.7", 1001)) in events
    assert AddressForgotten(("192.0.2.7", 1000)) in events  # ... the other went silent: forgotten
    assert peer.validated_addresses == {("192.0.2.7", 1001)}
