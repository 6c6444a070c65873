"""A WHEP request waiting for its publisher: the core's admission and live notification
(sfu.core.sessions), and the shell's futures and timeout (sfu.io.live_wait)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import pytest

from sfu import _fastpath
from sfu.config import Config
from sfu.core.certificate import CertificateStore
from sfu.core.sessions import SessionManager
from sfu.errors import Conflict, Overloaded
from sfu.io.live_wait import LiveWaiters

try:
    from tests.unit import sdp_samples as samples
except ImportError:  # tests/ is not a package: pytest puts this directory on sys.path
    import sdp_samples as samples  # type: ignore[no-redef]


def _manager(**config: object) -> SessionManager:
    router = _fastpath.Router(-1, socket.AF_INET)
    router.capture(True)
    now = [0.0]
    return SessionManager(
        dataclasses.replace(Config.for_tests(), **config), router, ["192.0.2.1"], 5000,
        CertificateStore(lifetime_days=2, renew_before_days=1), lambda: now[0], lambda: 1e9 + now[0],
    )


async def test_a_publisher_tells_the_live_listeners_its_stream_name():
    manager = _manager()
    heard: list[str] = []
    manager.add_live_listener(heard.append)
    await manager.publish("shop", samples.CHROME_PUBLISH_SIMULCAST, None)
    assert heard == ["shop"]
    await manager.publish("shop", samples.FIREFOX_PUBLISH, None)  # a new publisher replaces the old
    assert heard == ["shop", "shop"]


async def test_admission_without_waiting_is_a_counted_409():
    manager = _manager(whep_wait_for_publisher=False)
    with pytest.raises(Conflict) as error:
        manager.admit_viewer("nobody")
    assert error.value.retry_after == 2 and "is not live" in error.value.reason
    assert manager.counters["rejected-not-live"] == 1
    await manager.publish("shop", samples.CHROME_PUBLISH_SIMULCAST, None)
    assert manager.admit_viewer("shop") is None  # live: go on with view


async def test_admission_with_waiting_returns_the_timeout_and_expiry_is_a_counted_409():
    manager = _manager(whep_wait_for_publisher=True, whep_wait_timeout=7.0)
    assert manager.admit_viewer("shop") == 7.0
    assert manager.counters["rejected-not-live"] == 0
    error = manager.live_wait_expired("shop")
    assert isinstance(error, Conflict) and error.retry_after == 2 and "did not go live in time" in error.reason
    assert manager.counters["rejected-not-live"] == 1


async def test_admission_checks_limits_before_waiting():
    manager = _manager(whep_wait_for_publisher=True, max_sessions=1)
    await manager.publish("other", samples.CHROME_PUBLISH_SIMULCAST, None)
    with pytest.raises(Overloaded):
        manager.admit_viewer("shop")


async def test_a_publisher_that_left_before_the_waiting_request_resumed_is_a_409():
    manager = _manager(whep_wait_for_publisher=True)
    assert manager.admit_viewer("shop") is not None
    created = await manager.publish("shop", samples.CHROME_PUBLISH_SIMULCAST, None)
    await manager.delete("whip", "shop", created.session_id)
    with pytest.raises(Conflict) as error:
        await manager.view("shop", samples.CHROME_WHEP_RECVONLY, None, {})
    assert "is not live" in error.value.reason
    assert manager.counters["rejected-not-live"] == 0  # as before: only refusals at admission count


async def test_waiters_are_released_by_their_stream_going_live():
    live = LiveWaiters()
    waits = [asyncio.ensure_future(live.wait("shop", 5)) for _ in range(3)]
    other = asyncio.ensure_future(live.wait("other", 5))
    await asyncio.sleep(0)
    assert live.waiting("shop") == 3
    live.went_live("shop")
    assert await asyncio.gather(*waits) == [True, True, True]
    assert live.waiting("shop") == 0 and not other.done()
    other.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await other
    assert live.waiting("other") == 0


async def test_a_wait_runs_out():
    live = LiveWaiters()
    assert await live.wait("shop", 0.01) is False
    assert live.waiting("shop") == 0
    live.went_live("shop")  # nobody left to release
