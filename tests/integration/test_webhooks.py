"""Webhooks (sfu/io/webhooks.py) against a receiver in the test: every lifecycle event arrives signed
(Standard Webhooks, checked here with an HMAC computed independently), failed deliveries are retried
with a growing backoff and counted, a full queue drops and counts, and a receiver that hangs does not
hold media back (packet rate and forwarding latency with and without a hanging receiver, printed)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import statistics
import time

from aiohttp import web

import sfu
from sfu.core import events as ev
from sfu.io.webhooks import WORKERS, WebhookSender, verify
from sfu.testing import PacketPublisher, PacketViewer

from aiortc_clients import wait_until

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


class Receiver:
    """An aiohttp webhook receiver on loopback. `mode`: "ok" (204), "fail" (500 for the first
    `fail_first` attempts of each message, then 204), "hang" (never answers until released)."""

    def __init__(self, mode: str = "ok", fail_first: int = 0) -> None:
        self.mode = mode
        self.fail_first = fail_first
        self.attempts: list[tuple[float, dict[str, str], bytes]] = []  # (monotonic time, headers, body)
        self.delivered: list[dict] = []
        self.hanging = 0
        self.release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.attempts.append((time.monotonic(), headers, body))
        if self.mode == "hang":
            self.hanging += 1
            await self.release.wait()
            return web.Response(status=503)
        tries = sum(1 for _, h, _ in self.attempts if h["webhook-id"] == headers["webhook-id"])
        if self.mode == "fail" and tries <= self.fail_first:
            return web.Response(status=500)
        self.delivered.append(json.loads(body))
        return web.Response(status=204)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()

    def types(self) -> list[str]:
        return [m["type"] for m in self.delivered]


def _independent_signature(key: bytes, headers: dict[str, str], body: bytes) -> str:
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _config(url: str, **kw: object) -> sfu.Config:
    return dataclasses.replace(sfu.Config.for_tests(), webhook_urls=[url], webhook_secret=SECRET, **kw)


def _count(registry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_lifecycle_events_arrive_signed():
    async with Receiver() as receiver, sfu.Server(_config(receiver.url)) as server:
        publish = server.mint_token("shop", publish=True)
        async with PacketPublisher(server.whip_url("shop"), publish) as publisher:
            async with PacketViewer(server.whep_url("shop"), None) as viewer:
                await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, timeout=10)
            await wait_until(lambda: "viewer.left" in receiver.types(), 10, "viewer.left")
            assert publisher
        await wait_until(lambda: "stream.ended" in receiver.types(), 10, "stream.ended")

        assert receiver.types() == ["stream.started", "publisher.connected", "viewer.joined", "viewer.left",
                                    "publisher.disconnected", "stream.ended"], receiver.types()
        sessions = {m["type"]: m["data"].get("session") for m in receiver.delivered}
        assert sessions["publisher.connected"] == sessions["publisher.disconnected"]
        assert sessions["viewer.joined"] == sessions["viewer.left"] != sessions["publisher.connected"]
        assert all(m["data"]["stream"] == "shop" for m in receiver.delivered)
        assert len(sessions["viewer.joined"]) == 16  # the public id, never the session URL's secret
        now = time.time()
        for _, headers, body in receiver.attempts:
            assert headers["webhook-signature"] == _independent_signature(KEY, headers, body)
            assert abs(now - int(headers["webhook-timestamp"])) < 60
            assert verify(KEY, headers, body, now)
            assert not verify(b"another key" * 3, headers, body, now)
            assert not verify(KEY, headers, body + b" ", now)  # a changed body fails
        assert len({h["webhook-id"] for _, h, _ in receiver.attempts}) == 6
        assert _count(server.registry, "sfu_webhook_deliveries_total", result="delivered") == 6


async def test_sessions_closed_by_a_shutdown_are_reported():
    async with Receiver() as receiver:
        async with sfu.Server(_config(receiver.url)) as server:
            publish = server.mint_token("late", publish=True)
            publisher = PacketPublisher(server.whip_url("late"), publish)
            await publisher.start()
            await wait_until(lambda: "publisher.connected" in receiver.types(), 10, "publisher.connected")
        # the server stopped with the publisher still live: its last events were delivered first
        assert receiver.types()[-2:] == ["publisher.disconnected", "stream.ended"], receiver.types()
        assert receiver.delivered[-2]["data"]["reason"] == "server stopping"
        await publisher.stop()


async def test_drain_started_is_reported():
    async with Receiver() as receiver, sfu.Server(_config(receiver.url)) as server:
        assert server.begin_drain(30, reason="test")
        await wait_until(lambda: "drain.started" in receiver.types(), 10, "drain.started")
        (message,) = [m for m in receiver.delivered if m["type"] == "drain.started"]
        assert message["data"] == {"stream": "", "reason": "test"}


async def test_viewer_events_can_be_turned_off():
    async with Receiver() as receiver, sfu.Server(_config(receiver.url, webhook_viewer_events=False)) as server:
        publish = server.mint_token("big", publish=True)
        async with PacketPublisher(server.whip_url("big"), publish):
            async with PacketViewer(server.whep_url("big"), None) as viewer:
                await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, timeout=10)
        await wait_until(lambda: "stream.ended" in receiver.types(), 10, "stream.ended")
        assert "viewer.joined" not in receiver.types() and "viewer.left" not in receiver.types()
        assert _count(server.registry, "sfu_webhook_dropped_total", reason="viewer_events_off") == 2


async def test_failing_receiver_is_retried_with_backoff():
    """500 twice, then accepted: three attempts with the same id, the second wait longer than the
    first; counted as two failed attempts and one delivery. A receiver that never accepts is given
    up on after max_attempts, counted."""
    async with Receiver("fail", fail_first=2) as receiver:
        sender = WebhookSender([receiver.url], SECRET, backoff_base_s=0.2)
        sender.start()
        try:
            assert sender.submit(ev.StreamStarted(0.0, "shop"))
            await wait_until(lambda: len(receiver.delivered) == 1, 10, "delivery after two failures")
        finally:
            await sender.stop()
    times = [t for t, _, _ in receiver.attempts]
    ids = {h["webhook-id"] for _, h, _ in receiver.attempts}
    assert len(times) == 3 and len(ids) == 1
    first_wait, second_wait = times[1] - times[0], times[2] - times[1]
    print(f"\nbackoff between attempts: {first_wait * 1000:.0f} ms, {second_wait * 1000:.0f} ms")
    assert 0.15 <= first_wait and second_wait > first_wait  # 0.2 s then 0.4 s, +-20 % jitter
    assert sender.deliveries.labels(result="failed_attempt")._value.get() == 2
    assert sender.deliveries.labels(result="delivered")._value.get() == 1

    async with Receiver("fail", fail_first=100) as receiver:
        sender = WebhookSender([receiver.url], SECRET, backoff_base_s=0.05, max_attempts=3)
        sender.start()
        try:
            sender.submit(ev.StreamEnded(0.0, "shop"))
            await wait_until(lambda: sender.deliveries.labels(result="gave_up")._value.get() == 1, 10, "given up")
        finally:
            await sender.stop()
    assert len(receiver.attempts) == 3 and not receiver.delivered


async def test_full_queue_drops_and_counts():
    async with Receiver("hang") as receiver:
        sender = WebhookSender([receiver.url], SECRET, queue_size=3)
        sender.start()
        try:
            accepted = [sender.submit(ev.ViewerJoined(0.0, "shop", f"v{i}")) for i in range(20)]
            await wait_until(lambda: receiver.hanging == 3, 10, "the three queued held by the receiver")
            more = [sender.submit(ev.ViewerLeft(0.0, "shop", f"v{i}")) for i in range(10)]
        finally:
            await sender.stop()
    # 20 submitted at once into a queue of 3: 3 queued (the workers had not run yet), 17 dropped;
    # then three workers took one each and hang, and the queue has room for 3 of the next 10.
    assert accepted.count(True) == 3, accepted
    assert more.count(True) == 3 and more.count(False) == 7, more
    assert sender.dropped.labels(reason="queue_full")._value.get() == 17 + 7


async def test_hanging_receiver_does_not_delay_media(capsys):
    """The same publisher and viewer, first with a receiver that answers, then with one that hangs
    while a flood of events fills the queue: video keeps flowing at the same rate and latency."""
    async with Receiver("ok") as receiver, sfu.Server(_config(receiver.url, webhook_queue_size=8)) as server:
        publish = server.mint_token("show", publish=True)
        async with PacketPublisher(server.whip_url("show"), publish) as publisher, \
                PacketViewer(server.whep_url("show"), None, audio=False) as viewer:
            await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 30, timeout=10)
            await wait_until(lambda: "viewer.joined" in receiver.types(), 10, "viewer.joined delivered")
            answering = await _measure(viewer)

            receiver.mode = "hang"
            for i in range(200):  # far more than the queue holds, all while every worker hangs
                server.webhooks.submit(ev.ViewerJoined(0.0, "show", f"fake{i}"))
            await wait_until(lambda: receiver.hanging == WORKERS, 10, "every worker held by the receiver")
            hanging = await _measure(viewer)
            assert receiver.hanging == WORKERS  # still hanging: the measurement ran while they were held
            dropped = _count(server.registry, "sfu_webhook_dropped_total", reason="queue_full")
            assert publisher
    with capsys.disabled():
        print(f"\nforwarding, receiver answering: {answering}\nforwarding, receiver hanging:   {hanging}"
              f"\nwebhook events dropped (queue full): {dropped:.0f}")
    assert dropped >= 200 - 8  # the queue (8) was full, the rest counted
    # media kept flowing while every worker hung (_measure waited for MEASURE_FRAMES frames), none lost
    assert hanging["lost"] == 0 and hanging["samples"] > 0


MEASURE_FRAMES = 90  # about three seconds of the test publisher's 30 fps


async def _measure(viewer: PacketViewer) -> dict[str, float]:
    """Frames, packet rate and one-way forwarding latency over the next MEASURE_FRAMES video frames."""
    viewer._latency["video"].clear()  # this window's samples only
    start = viewer.stats["video"]
    t0 = time.monotonic()
    await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= start["frames"] + MEASURE_FRAMES, timeout=15)
    elapsed = time.monotonic() - t0
    end = viewer.stats["video"]
    lat_ms = sorted(x / 1e6 for x in end["latency_ns"])
    return {
        "samples": len(lat_ms),
        "packets_per_s": round((end["packets"] - start["packets"]) / elapsed, 1),
        "latency_p50_ms": round(statistics.median(lat_ms), 2),
        "latency_p99_ms": round(lat_ms[int(0.99 * (len(lat_ms) - 1))], 2),
        "lost": end["lost_final"] - start["lost_final"],
    }

