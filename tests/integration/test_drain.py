"""Graceful drain (issue 13, point 3): by admin call in-process, and by SIGTERM to a real `sfu serve`.

While draining, a new WHIP/WHEP POST gets 503 with Retry-After and `/readyz` is 503, `/healthz`
stays 200 and the sessions already there keep receiving media; at the deadline the rest are closed
and `sfu serve` exits 0. A second SIGTERM stops at once.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp

from sfu.testing import PacketPublisher, PacketViewer
from sfu.testing.process import ServeProcess

SDP = {"Content-Type": "application/sdp"}


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def status_of(http: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, dict[str, str]]:
    async with http.request(method, url, **kw) as r:
        return r.status, dict(r.headers)


async def test_admin_drain_refuses_new_sessions_keeps_old_ones_then_closes_them(server):
    admin = {"Authorization": f"Bearer {server.mint_admin_token(participant='ops')}"}
    publish = {"Authorization": f"Bearer {server.mint_token('d', publish=True)}"}
    async with PacketPublisher(server.whip_url("d"), server.mint_token("d", publish=True)) as pub, \
            PacketViewer(server.whep_url("d")) as viewer, aiohttp.ClientSession() as http:
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, 15)
        assert (await status_of(http, "GET", server.http_url + "/readyz"))[0] == 200
        async with http.post(server.http_url + "/admin/drain", json={"deadline_s": 3}, headers=admin) as r:
            assert r.status == 202 and (await r.json())["draining"] is True
        for url, headers in ((server.whip_url("d2"), publish), (server.whep_url("d"), {})):
            status, h = await status_of(http, "POST", url, data="v=0\r\n", headers={**SDP, **headers})
            assert status == 503 and 1 <= int(h["Retry-After"]) <= 3, (url, status, h)
        assert (await status_of(http, "GET", server.http_url + "/readyz"))[0] == 503
        assert (await status_of(http, "GET", server.http_url + "/healthz"))[0] == 200
        frames = viewer.stats["video"]["frames"]
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= frames + 20, 10)  # still served
        await asyncio.wait_for(server.drain.done.wait(), 10)
        await viewer.wait_for(lambda: viewer.dtls_state == "closed", 5)
        await pub.wait_for(lambda: pub.dtls_state == "closed", 5)
        assert server.stats()["sessions"] == {}
        async with http.get(server.http_url + "/metrics", headers=admin) as r:
            assert 'sfu_http_rejected_total{reason="draining"} 2.0' in await r.text()


async def test_drain_ends_early_when_the_last_session_leaves(server):
    async with PacketPublisher(server.whip_url("e"), server.mint_token("e", publish=True)) as pub:
        await pub.wait_for(lambda: pub.dtls_state == "connected", 10)
        assert server.begin_drain(deadline_s=600, reason="test")
        assert not server.begin_drain(deadline_s=1)  # one drain at a time; its deadline stays
    await asyncio.wait_for(server.drain.done.wait(), 10)  # long before the 600 s deadline


# -- a real `sfu serve` process (sfu/testing/process.py) ---------------------------------------------


async def test_sigterm_drains_then_exits_0_at_the_deadline():
    async with ServeProcess("--drain-timeout", "4") as serve, \
            PacketPublisher(f"{serve.http_url}/whip/t", serve.mint_token("t", publish=True)), \
            PacketViewer(f"{serve.http_url}/whep/t") as viewer, aiohttp.ClientSession() as http:
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, 15)
        assert serve.proc is not None
        serve.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        publish = {"Authorization": f"Bearer {serve.mint_token('t2', publish=True)}", **SDP}
        for _ in range(100):
            status, headers = await status_of(http, "POST", f"{serve.http_url}/whip/t2", data="v=0\r\n", headers=publish)
            if status == 503:
                break
            await asyncio.sleep(0.05)  # the signal is handled asynchronously
        assert status == 503 and 1 <= int(headers["Retry-After"]) <= 4
        assert (await status_of(http, "GET", f"{serve.http_url}/readyz"))[0] == 503
        assert (await status_of(http, "GET", f"{serve.http_url}/healthz"))[0] == 200
        frames = viewer.stats["video"]["frames"]
        await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= frames + 20, 10)
        assert serve.proc.returncode is None  # sessions open: it waits for the deadline
        assert await serve.exit_code(15) == 0
        assert time.monotonic() - sent >= 3.5  # not before the deadline (4 s, the clock's slack aside)
        await viewer.wait_for(lambda: viewer.dtls_state == "closed", 5)


async def test_a_second_sigterm_stops_at_once():
    async with ServeProcess("--drain-timeout", "600") as serve, \
            PacketPublisher(f"{serve.http_url}/whip/u", serve.mint_token("u", publish=True)) as pub, \
            aiohttp.ClientSession() as http:
        await pub.wait_for(lambda: pub.dtls_state == "connected", 10)
        assert serve.proc is not None
        serve.proc.send_signal(signal.SIGTERM)
        for _ in range(100):
            if (await status_of(http, "GET", f"{serve.http_url}/readyz"))[0] == 503:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("never started draining")
        serve.proc.send_signal(signal.SIGTERM)
        assert await serve.exit_code(15) == 0  # long before the 600 s deadline
        await pub.wait_for(lambda: pub.dtls_state == "closed", 5)
