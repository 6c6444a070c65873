"""Floods and leaks against the real server (issue 18, point 5; docs/security.md "Floods and leaks").

- Ended sessions are freed by reference counting: with the cycle collector off (as good as off in
  `sfu serve`, which raises its thresholds), the live objects of the project's own classes return
  to their count before the sessions. Counts, not RSS: deterministic.
- Unconnected WHEP sessions are bounded per client address and in total (503 + Retry-After) and
  freed when no ICE check comes in time.
- Slow HTTP clients: headers and bodies time out; at the connection cap (from a 1,024 open-files
  limit, systemd's default) 1,100 slow clients cannot keep `/healthz` from answering.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import re
import resource
import secrets
import socket
import subprocess
import sys
from collections import Counter

import aiohttp
import pytest

import sfu
from sfu.keys import KeySet
from sfu.testing import PacketPublisher, PacketViewer

WAIT_S = 30.0  # every wait below is on a condition, with this deadline at most
SDP = {"Content-Type": "application/sdp"}
TRACKED = (  # the per-session objects of the server, and OpenSSL's connection wrapper
    "sfu.core.sessions.Session", "sfu.core.peer.Peer", "sfu.core.dtls.DtlsEndpoint", "sfu.core.ice.IceLite",
    "sfu.core.subscription.Subscription", "sfu._fastpath.Endpoint", "sfu._fastpath.OutTrack",
    "OpenSSL.SSL.Connection",
)


async def _until(predicate, what: str, timeout: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _live(names=TRACKED) -> Counter[str]:
    """Live objects per class name, without collecting."""
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        cls = type(obj)
        name = f"{getattr(cls, '__module__', '')}.{cls.__qualname__}"
        if name in names and getattr(obj, "role", "server") == "server":  # not the test clients' DTLS
            counts[name] += 1
    return counts


async def _publish(server, stream: str) -> PacketPublisher:
    publisher = PacketPublisher(server.whip_url(stream), server.mint_token(stream, publish=True),
                                bitrate=200_000, fps=10)
    await publisher.start()
    return publisher


async def _post(http: aiohttp.ClientSession, url: str, offer: str) -> tuple[int, str, dict]:
    async with http.post(url, data=offer.encode(), headers=SDP) as r:
        return r.status, await r.text(), dict(r.headers)


# -- leaks ----------------------------------------------------------------------------------------------


async def test_ended_sessions_are_freed_without_the_cycle_collector():
    async with sfu.Server(sfu.Config.for_tests()) as server:
        publisher = await _publish(server, "leak")
        offer = PacketViewer(server.whep_url("leak")).build_offer()
        async with aiohttp.ClientSession() as http:
            warm = PacketViewer(server.whep_url("leak"), http=http)  # first-use caches, outside the count
            await warm.start()
            await warm.stop()
            await _until(lambda: len(server.manager.sessions) == 1, "the warm-up viewer to go")
            gc.collect()
            gc.disable()
            try:
                before = _live()
                # connected viewers that leave with DELETE
                viewers = [PacketViewer(server.whep_url("leak"), http=http) for _ in range(3)]
                await asyncio.gather(*(v.start() for v in viewers))
                await asyncio.gather(*(v.stop() for v in viewers))
                # unconnected sessions (expiry ends them the same way: test_unconnected_sessions_...)
                locations = []
                for _ in range(12):
                    status, _, headers = await _post(http, server.whep_url("leak"), offer)
                    assert status == 201
                    locations.append(headers["Location"])
                for location in locations:
                    async with http.delete(location) as r:
                        assert r.status == 200
                await _until(lambda: len(server.manager.sessions) == 1, "every viewer session to end")
                del viewers
                after = _live()
            finally:
                gc.enable()
        await publisher.stop()
    grown = {name: after[name] - before[name] for name in TRACKED if after[name] > before[name]}
    assert grown == {}, f"objects left behind by ended sessions (freed only by the collector): {grown}"


async def test_expired_unconnected_sessions_are_freed_without_the_cycle_collector():
    config = dataclasses.replace(sfu.Config.for_tests(), unconnected_timeout_s=0.5)
    async with sfu.Server(config) as server:
        publisher = await _publish(server, "expire")
        offer = PacketViewer(server.whep_url("expire")).build_offer()
        async with aiohttp.ClientSession() as http:
            gc.collect()
            gc.disable()
            try:
                before = _live()
                for _ in range(10):
                    assert (await _post(http, server.whep_url("expire"), offer))[0] == 201
                await _until(lambda: len(server.manager.sessions) == 1, "the unconnected sessions to expire")
                after = _live()
            finally:
                gc.enable()
        assert server.manager.counters["unconnected-expired"] == 10
        await publisher.stop()
    grown = {name: after[name] - before[name] for name in TRACKED if after[name] > before[name]}
    assert grown == {}, f"objects left behind by expired sessions: {grown}"


# -- unconnected sessions -------------------------------------------------------------------------------


async def test_unconnected_sessions_are_bounded_per_source_and_in_total_and_freed():
    config = dataclasses.replace(sfu.Config.for_tests(), max_unconnected_per_source=3, max_unconnected=5,
                                 unconnected_timeout_s=1.0)
    async with sfu.Server(config) as server:
        publisher = await _publish(server, "bound")
        url = server.whep_url("bound")
        offer = PacketViewer(url).build_offer()
        one = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.1", 0)))
        two = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))
        try:
            assert [(await _post(one, url, offer))[0] for _ in range(3)] == [201] * 3
            status, body, headers = await _post(one, url, offer)
            assert status == 503 and "waiting to connect" in body and int(headers["Retry-After"]) > 0
            assert [(await _post(two, url, offer))[0] for _ in range(2)] == [201] * 2  # 127.0.0.2 is another source
            status, body, _ = await _post(two, url, offer)
            assert status == 503 and "unconnected-total" in body
            assert server.manager.counters["rejected-unconnected-per-source"] == 1
            assert server.manager.counters["rejected-unconnected-total"] == 1
            # a viewer that connects stops counting the moment its first check arrives... once the
            # stale ones are freed (no ICE check within 1 s), the bound has room again
            await _until(lambda: len(server.manager.sessions) == 1, "the unconnected sessions to be freed", 10.0)
            assert server.manager.counters["unconnected-expired"] == 5
            viewer = PacketViewer(url, http=one)
            await viewer.start()  # connects: no longer unconnected
            assert len(server.manager.admission) == 0
            assert [(await _post(one, url, offer))[0] for _ in range(3)] == [201] * 3
            await viewer.stop()
        finally:
            await one.close()
            await two.close()
        metrics = await _get_text(f"{server.http_url}/metrics", server.mint_admin_token())
        assert re.search(r'^sfu_unconnected_refused_total\{reason="unconnected-per-source"\} 1\.0$', metrics, re.M)
        await publisher.stop()


async def _get_text(url: str, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=headers) as r:
            return await r.text()


# -- slow HTTP clients ------------------------------------------------------------------------------------


async def test_slow_body_is_answered_408_after_the_body_timeout():
    async with sfu.Server(sfu.Config.for_tests()) as server:  # the default timeout: 10 s
        publisher = await _publish(server, "slow")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        writer.write(b"POST /whep/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
                     b"Content-Length: 5000\r\n\r\nv=0\r\n")  # and the rest never comes
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), WAIT_S)
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
        writer.close()
        await publisher.stop()


def _limit_open_files() -> None:  # in the server child: systemd's default soft and hard limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


async def test_slow_header_clients_are_dropped_and_healthz_keeps_answering():
    """1,100 clients that never finish their headers against a server limited to 1,024 open files."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1400:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),) * 2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = secrets.token_urlsafe(32)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sfu", "serve", "--http-host", "127.0.0.1", "--http-port", str(port),
         "--udp-port", "0", "--public-ip", "127.0.0.1", f"--token-secret={secret}", "--log-level", "warning",
         ],  # the default header timeout (10 s)
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limit_open_files,
    )
    slow: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), WAIT_S)
        assert line.startswith(b"sfu "), line
        base = f"http://127.0.0.1:{port}"
        for _ in range(1100):
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT_S)
            except (OSError, TimeoutError):  # the server's backlog overflowing is the same story
                continue
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and the headers never end
            slow.append(writer)
            readers.append(reader)
        assert len(slow) >= 1024
        # the health check gets in (the oldest slow connection makes room) and is answered
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200 and await r.text() == "ok"
            # every slow client is closed by the server: evicted, or at its header deadline
            closed = await asyncio.wait_for(
                asyncio.gather(*(r.read() for r in readers), return_exceptions=True), WAIT_S)
            assert all(c == b"" or isinstance(c, ConnectionError) for c in closed)
            admin = KeySet([("default", secret)]).mint("*", admin=True)
            async with http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {admin}"}) as r:
                metrics = await r.text()
        dropped = {m[0]: float(m[1]) for m in re.findall(
            r'^sfu_http_connections_dropped_total\{reason="([a-z-]+)"\} ([0-9.]+)$', metrics, re.M)}
        assert dropped["header-timeout"] > 0 and dropped["evicted"] > 0
        assert sum(dropped.values()) >= len(slow)
    finally:
        for writer in slow:
            writer.close()
        proc.terminate()
        _, err = await asyncio.to_thread(proc.communicate, timeout=WAIT_S)
    assert b"HTTP connections dropped" in err  # logged, not silent
    assert b"Traceback" not in err


@pytest.fixture(autouse=True)
def _gc_enabled():
    yield
    gc.enable()


async def test_at_the_cap_with_every_connection_busy_a_new_one_is_refused_and_counted():
    config = dataclasses.replace(sfu.Config.for_tests(), max_http_connections=3, whep_wait_for_publisher=True,
                                 whep_wait_timeout=5.0)  # (the server waits for them on stop)
    async with sfu.Server(config) as server:
        offer = PacketViewer(server.whep_url("later")).build_offer()
        async with aiohttp.ClientSession() as http:
            waiting = [asyncio.ensure_future(_post(http, server.whep_url("later"), offer)) for _ in range(3)]
            await _until(lambda: len(server.http_guard) == 3 and server.manager.counters["view-sessions"] == 0
                         and server.http_guard.dropped["refused"] == 0, "three WHEP requests waiting")
            reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
            assert await asyncio.wait_for(reader.read(), WAIT_S) == b""  # closed at once, nothing sent
            writer.close()
            assert server.http_guard.dropped["refused"] == 1 and server.http_guard.dropped["evicted"] == 0
            for task in waiting:  # the waiting clients give up: their connections close
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
        await _until(lambda: len(server.http_guard) == 0, "the waiting connections to close")
        assert (await _get_text(f"{server.http_url}/healthz")) == "ok"
