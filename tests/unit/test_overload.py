"""The overload guard (sans-IO, fake clock), its ceiling in a viewer's layer choice, and the fast
path's measure of how long media waited in the socket."""

from __future__ import annotations

import select
import socket
import struct
import time

from sfu._fastpath import Router
from sfu.core import overload
from sfu.core.allocator import INF, LayerOption, ViewerRateControl
from sfu.core.overload import OverloadGuard
from sfu.io.udp import SO_TIMESTAMPNS

TICK = 0.05
LIMIT = 0.03


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.bytes = 0

    def run(self, guard: OverloadGuard, seconds: float, delay: float, bps: float, viewers: int = 10) -> list[float | None]:
        """Ticks for `seconds` with this queue delay and output rate; the ceilings announced."""
        announced = []
        for _ in range(round(seconds / TICK)):
            self.now += TICK
            self.bytes += int(bps * TICK / 8)
            if guard.update(self.now, delay, self.bytes, viewers):
                announced.append(guard.ceiling_bps)
        return announced


def test_no_ceiling_while_media_does_not_wait_nor_for_a_blip() -> None:
    guard, clock = OverloadGuard(LIMIT), Clock()
    assert clock.run(guard, 5.0, 0.004, 20e6) == []
    # two ticks over the limit, then calm again: a pause, not an overload
    assert clock.run(guard, TICK * (overload.OVERLOAD_UPDATES - 1), 0.2, 20e6) == []
    assert clock.run(guard, 1.0, 0.001, 20e6) == []
    assert guard.ceiling_bps is None and guard.cuts == 0 and guard.limit_bps == INF
    assert guard.overloaded_updates == overload.OVERLOAD_UPDATES - 1


def test_sustained_waiting_cuts_from_the_per_viewer_share_once_a_second_down_to_a_floor() -> None:
    guard, clock = OverloadGuard(LIMIT), Clock()
    clock.run(guard, 1.0, 0.002, 20e6)  # 10 viewers sharing 20 Mbit/s: 2 Mbit/s each
    announced = clock.run(guard, 0.5, 0.080, 20e6)
    assert len(announced) == 1
    assert abs(announced[0] - 2e6 * overload.CUT_FACTOR) < 2e6 * 0.02
    # still waiting a second later: cut again, from the ceiling (the output has not fallen yet)
    announced = clock.run(guard, 1.0, 0.080, 20e6)
    assert len(announced) == 1
    assert abs(announced[0] - 2e6 * overload.CUT_FACTOR ** 2) < 2e6 * 0.02
    # ... and from the share once the output is below the ceiling
    announced = clock.run(guard, 1.0, 0.080, 5e6)
    assert abs(announced[-1] - 0.5e6 * overload.CUT_FACTOR) < 0.5e6 * 0.05
    clock.run(guard, 20.0, 0.080, 1e6)
    assert guard.ceiling_bps == overload.MIN_CEILING_BPS
    assert guard.stats()["ceiling_bps"] == overload.MIN_CEILING_BPS and guard.cuts >= 5
    assert guard.limit_bps == overload.MIN_CEILING_BPS


def test_calm_raises_the_ceiling_in_announced_steps_then_lifts_it() -> None:
    guard, clock = OverloadGuard(LIMIT), Clock()
    clock.run(guard, 1.0, 0.002, 10e6)
    clock.run(guard, 0.3, 0.080, 10e6)
    low = guard.ceiling_bps
    assert low is not None
    # waits under the limit but above its calm share: no recovery yet
    assert clock.run(guard, 5.0, LIMIT * 0.5, 2e6) == [] and guard.ceiling_bps == low
    # calm: nothing for RECOVER_AFTER_S, then growth, announced every ANNOUNCE_STEP
    assert clock.run(guard, overload.RECOVER_AFTER_S - TICK, 0.001, 2e6) == []
    announced = clock.run(guard, 3.0, 0.001, 2e6)
    assert announced and all(b > a for a, b in zip([low, *announced], announced, strict=False))
    assert all(b / a >= overload.ANNOUNCE_STEP * 0.999 for a, b in zip([low, *announced], announced, strict=False))
    clock.run(guard, 60.0, 0.001, 2e6)
    assert guard.ceiling_bps is None  # lifted above MAX_CEILING_BPS


def test_a_zero_limit_turns_the_guard_off() -> None:
    guard, clock = OverloadGuard(0.0), Clock()
    assert clock.run(guard, 10.0, 5.0, 20e6) == []
    assert guard.ceiling_bps is None and not guard.enabled
    assert guard.last_delay_s == 5.0  # still measured and reported


RANKED = [LayerOption("q", "q", 150_000), LayerOption("h", "h", 600_000), LayerOption("f", "f", 2_000_000)]


def test_a_ceiling_moves_a_viewer_down_without_waiting_for_congestion_and_stops_probing_above_it() -> None:
    control, twin = ViewerRateControl(0.0), ViewerRateControl(0.0)
    for c in (control, twin):
        c.bwe.delay_bps = c.bwe.loss_bps = 8_000_000  # a link that takes far more
        assert c.decide(0.0, RANKED, 0.0, 0.0).target == "f"
        c.allocator.current = "f"
    control.ceiling_bps = 700_000
    assert control.decide(0.1, RANKED, 0.0, 2e6).reason == "confirming-down"
    assert {twin.decide(0.1 * k, RANKED, 0.0, 2e6).target for k in range(1, 50)} == {"f"}  # no ceiling
    decision = control.decide(0.4, RANKED, 0.0, 2e6)
    assert (decision.target, decision.reason) == ("h", "overload-down")  # the link was fine
    assert control.allocator.hold_until > 0.4  # upgrades held off as after any step down
    control.allocator.current = "h"
    for step in range(1, 200):  # 20 s at h: never a probe (padding) for f above the ceiling
        decision = control.decide(0.4 + step * 0.1, RANKED, 0.0, 600_000)
        assert decision.target == "h" and decision.padding_bytes == 0
    control.ceiling_bps = INF  # lifted: the estimate rules again
    targets = {control.decide(20.5 + step * 0.1, RANKED, 0.0, 600_000).target for step in range(40)}
    assert "f" in targets


def test_a_step_down_the_link_also_forces_is_a_bandwidth_one() -> None:
    control = ViewerRateControl(0.0)
    control.bwe.delay_bps = control.bwe.loss_bps = 8_000_000
    control.decide(0.0, RANKED, 0.0, 0.0)
    control.allocator.current = "f"
    control.ceiling_bps = 700_000
    control.bwe.delay_bps = 900_000  # the link cannot take f either
    control.decide(0.1, RANKED, 0.0, 2e6)
    decision = control.decide(0.4, RANKED, 0.0, 2e6)
    assert (decision.target, decision.reason) == ("h", "bandwidth-down")
    assert control.allocator.hold_until > 0.4 and control.allocator.downgrades == 1


def test_a_new_viewer_under_a_ceiling_starts_below_it() -> None:
    control = ViewerRateControl(0.0)
    control.ceiling_bps = 200_000
    assert control.decide(0.0, RANKED, 0.0, 0.0).target == "q"


def _wait_until_the_kernel_stamps_on_arrival(rx: socket.socket, tx: socket.socket) -> None:
    """Linux turns its receive-timestamping switch on by deferred work (net_enable_timestamp ->
    schedule_work) when the first socket of the host asks for it, and turns it off the same way when
    the last one closes. Until the switch is on, a datagram gets its SO_TIMESTAMPNS stamp when it is
    READ (__sock_recv_timestamp stamps an unstamped skb), so its wait reads ~0. In a full test run
    earlier tests open and close timestamping sockets, and on a busy host the work item lags: probe
    until a datagram that sat in rx for a while carries a stamp older than its read."""
    deadline = time.monotonic() + 5.0
    while True:
        tx.sendto(b"\x01\x00", rx.getsockname())
        select.select([rx], [], [], 1.0)
        time.sleep(0.01)  # let the probe sit in the socket: a stamp taken on arrival is that much older
        _data, ancillary, _flags, _addr = rx.recvmsg(64, socket.CMSG_SPACE(16))
        stamps = [data for level, kind, data in ancillary if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS]
        if stamps:
            sec, nsec = struct.unpack("qq", stamps[0][:16])
            if time.time() - (sec + nsec / 1e9) >= 0.005:
                return
        assert time.monotonic() < deadline, "the kernel never stamped a datagram on arrival"


def test_the_router_measures_how_long_media_waited_in_the_socket() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for sock in (rx, plain):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        _wait_until_the_kernel_stamps_on_arrival(rx, tx)
        router, untimed = Router(rx.fileno(), socket.AF_INET), Router(plain.fileno(), socket.AF_INET)
        assert router.take_queue_delay() == 0.0
        for target in (rx, plain):
            tx.sendto(b"\x01\x00", target.getsockname())  # STUN range: handed back, not forwarded
        # on a busy host loopback delivery can lag the send (softirq): time from when both are queued
        deadline = time.monotonic() + 5.0
        while len(select.select([rx, plain], [], [], 0.5)[0]) < 2:
            assert time.monotonic() < deadline, "the datagrams never reached their sockets"
        sent = time.monotonic()
        time.sleep(0.05)  # the wait being measured: the datagrams sit in their sockets meanwhile
        handed = router.on_readable(time.monotonic())
        waited = time.monotonic() - sent
        assert handed and len(handed) == 1
        delay = router.take_queue_delay()
        assert 0.05 <= delay <= waited + 0.01
        assert router.take_queue_delay() == 0.0  # taken: reset
        assert untimed.on_readable(time.monotonic())
        assert untimed.take_queue_delay() == 0.0  # no kernel timestamps: nothing claimed
    finally:
        for sock in (rx, tx, plain):
            sock.close()
