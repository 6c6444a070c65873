"""MediaPort: Python work never holds media back longer than the poll budget.

A fake router counts drains and hands back queued "control datagrams"; a fake manager spends a fake
amount of time per datagram and per session in its timer sweep (the module's perf_counter is
replaced by a fake clock): the port must drain the socket between work items once the budget is
spent, and handle control datagrams in arrival order.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from sfu.io import udp


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class FakeRouter:
    def __init__(self) -> None:
        self.drains = 0
        self.batches: list[list[tuple]] = []  # what each drain returns, in order

    def on_readable(self, now: float):
        self.drains += 1
        return self.batches.pop(0) if self.batches else None


class FakeManager:
    def __init__(self, clock: FakeClock, cost_s: float) -> None:
        self.clock = clock
        self.cost_s = cost_s
        self.handled: list[bytes] = []
        self.on_wakeup = None
        self.media_poll = None
        self.sessions = 5

    def handle_datagram(self, kind, endpoint, data, addr, now) -> None:
        self.clock.t += self.cost_s
        self.handled.append(data)
        self.on_handle(data)

    def on_handle(self, data: bytes) -> None:
        pass

    def handle_timer(self, now: float) -> None:
        for _ in range(self.sessions):  # one unit of work per session, as SessionManager's sweeps
            self.clock.t += self.cost_s
            self.media_poll()

    def next_deadline(self) -> float:
        return float("inf")

    def take_datagrams(self) -> list:
        return []


@pytest.fixture
def port(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(udp.time, "perf_counter", clock)
    loop = asyncio.new_event_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    p = udp.MediaPort(sock, loop)
    p.router = FakeRouter()
    yield p, clock
    sock.close()
    loop.close()


def _dgram(tag: str) -> tuple:
    return ("rtcp", None, tag.encode(), None, 0)


def test_slow_datagrams_interleave_with_drains_in_order(port):
    p, clock = port
    manager = FakeManager(clock, cost_s=udp.MEDIA_POLL_BUDGET_S * 1.5)
    p.manager = manager
    manager.media_poll = p.poll_media
    p.router.batches = [[_dgram("a"), _dgram("b"), _dgram("c")], [_dgram("d")], [], [], []]
    order: list[str] = []
    manager.on_handle = lambda data: order.append(data.decode())
    p._on_readable()
    # every item took more than the budget: a drain after each; "d" (from the second drain) waits
    # for the next loop iteration, after the callbacks already ready (an HTTP request, here)
    assert manager.handled == [b"a", b"b", b"c"]
    assert p.router.drains == 4 and p.media_polls == 3
    p.loop.run_until_complete(asyncio.sleep(0))
    assert manager.handled == [b"a", b"b", b"c", b"d"]


def test_control_traffic_that_never_stops_does_not_starve_other_callbacks(port):
    p, clock = port
    manager = FakeManager(clock, cost_s=udp.MEDIA_POLL_BUDGET_S * 1.5)
    p.manager = manager
    manager.media_poll = p.poll_media
    p.router.batches = [[_dgram(f"r{i}")] for i in range(1000)]  # every drain brings one more
    order: list[str] = []
    manager.on_handle = lambda data: order.append(data.decode())
    p._on_readable()
    p.loop.call_soon(lambda: order.append("http"))
    for _ in range(3):
        p.loop.run_until_complete(asyncio.sleep(0))
    assert "http" in order  # ran while the control queue was still being refilled
    assert p._slow and order.index("http") < len(order) - 1


def test_a_long_drain_earns_control_work_its_share(port):
    p, clock = port
    manager = FakeManager(clock, cost_s=udp.MEDIA_POLL_BUDGET_S * 1.5)
    p.manager = manager
    manager.media_poll = p.poll_media
    drain_s = 0.01  # a drain forwarding to many viewers

    def slow_drain(now):
        clock.t += drain_s
        p.router.drains += 1
        return p.router.batches.pop(0) if p.router.batches else None

    p.router.on_readable = slow_drain
    p.router.batches = [[_dgram(str(i)) for i in range(20)]]
    p._on_readable()
    assert len(manager.handled) == 20
    # 20 items of 0.3 ms = 6 ms of control work; a drain only after 5 ms (half the 10 ms drain)
    assert p.router.drains == 2


def test_cheap_work_does_not_drain(port):
    p, clock = port
    manager = FakeManager(clock, cost_s=udp.MEDIA_POLL_BUDGET_S / 10)
    p.manager = manager
    manager.media_poll = p.poll_media
    p.router.batches = [[_dgram(str(i)) for i in range(5)]]
    p._on_readable()
    assert len(manager.handled) == 5
    assert p.router.drains == 1  # 5 x a tenth of the budget: no extra drain
    assert p.media_polls == 0


def test_timer_sweep_drains_between_sessions_and_handles_what_came(port):
    p, clock = port
    manager = FakeManager(clock, cost_s=udp.MEDIA_POLL_BUDGET_S * 2)
    p.manager = manager
    manager.media_poll = p.poll_media
    p.router.batches = [[_dgram("x")]]  # arrives during the sweep
    p._on_timer()
    p.loop.run_until_complete(asyncio.sleep(0))
    # one drain per session of the sweep, one more after "x" (handled once the sweep ended, not
    # inside it) also spent the budget
    assert manager.handled == [b"x"]
    assert p.router.drains == manager.sessions + 1
