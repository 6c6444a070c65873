"""Webhooks: the core's lifecycle events (`sfu.core.events`) POSTed to the operator's URLs.

Signed as Standard Webhooks (https://www.standardwebhooks.com, "Signature scheme"): each request
carries `webhook-id` (the message id, the same on every retry), `webhook-timestamp` (Unix seconds of
this attempt) and `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`. The
key is the base64 after `whsec_` when the secret is written that way, else the secret's UTF-8 bytes.
The body is JSON: `{"type": "stream.started", "timestamp": "<ISO 8601>", "data": {"stream": ...,
"session": <public id>, ...}}`.

Delivery is at least once: a non-2xx answer, a refused connection or no answer within
`REQUEST_TIMEOUT_S` is retried after an exponential backoff (`BACKOFF_BASE_S` doubling, capped at
`BACKOFF_MAX_S`, with jitter) up to `MAX_ATTEMPTS` attempts; a receiver must deduplicate by
`webhook-id`. Media never waits for it: `submit` only puts the event on a bounded queue (a full queue
drops the new event, counted), and `WORKERS` tasks deliver from it, so a receiver that hangs holds
at most those tasks. What drives it: `pump()` takes the session manager's events every
`EVENT_POLL_S` (the core never calls out); `start()` / `stop()` from the server.

Counted (Prometheus, bounded labels): `sfu_webhook_deliveries_total{result}` (delivered, failed
attempt, gave up), `sfu_webhook_dropped_total{reason}` (queue full, filtered viewer event).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from ..core import events as ev

log = logging.getLogger("sfu.webhooks")

EVENT_POLL_S = 0.05  # the session manager's outbox is drained this often
REQUEST_TIMEOUT_S = 5.0  # a receiver slower than this is a failed attempt
MAX_ATTEMPTS = 6  # per URL: the first try and five retries (0.5 + 1 + 2 + 4 + 8 s of backoff)
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
BACKOFF_JITTER = 0.2  # +-20 % so that retries from many nodes do not arrive together
WORKERS = 4  # concurrent deliveries; a hanging receiver holds at most these
FLUSH_S = 2.0  # at shutdown, how long the last events (sessions closed by the shutdown) may take


def signing_key(secret: str) -> bytes:
    """The HMAC key: base64-decoded after a `whsec_` prefix (Standard Webhooks), else the UTF-8 text."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one attempt."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(key: bytes, headers: dict[str, str], body: bytes, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver does: check a signature (any of the space-separated ones) and the timestamp's age."""
    try:
        msg_id, timestamp = headers["webhook-id"], int(headers["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(key, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, s) for s in headers.get("webhook-signature", "").split())


@dataclass
class Message:
    msg_id: str
    type: str
    body: bytes


def event_payload(event: ev.Event, wall: float) -> dict[str, object]:
    data = {k: v for k, v in asdict(event).items() if k != "now"}
    return {
        "type": event.type,
        "timestamp": datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds"),
        "data": data,
    }


class WebhookSender:
    """Delivers events to `urls` (see the module docstring). `clock` is the session manager's
    (monotonic) clock, to date events on the wall clock."""

    def __init__(
        self,
        urls: list[str],
        secret: str,
        *,
        viewer_events: bool = True,
        queue_size: int = 1000,
        registry: CollectorRegistry | None = None,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base_s: float = BACKOFF_BASE_S,
    ) -> None:
        self.urls = list(urls)
        self.key = signing_key(secret)
        self.viewer_events = viewer_events
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=queue_size)
        self.request_timeout_s = request_timeout_s
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        registry = registry if registry is not None else CollectorRegistry()
        self.deliveries = Counter("sfu_webhook_deliveries", "Webhook delivery attempts, by result",
                                  ["result"], registry=registry)
        self.dropped = Counter("sfu_webhook_dropped", "Webhook events not delivered, by reason",
                               ["reason"], registry=registry)
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None

    # -- in -----------------------------------------------------------------------------------

    def submit(self, event: ev.Event, wall: float | None = None) -> bool:
        """Queue one event; never waits. False when it was filtered out or the queue is full."""
        if not self.viewer_events and isinstance(event, ev.VIEWER_EVENTS):
            self.dropped.labels(reason="viewer_events_off").inc()
            return False
        payload = event_payload(event, time.time() if wall is None else wall)
        message = Message("msg_" + secrets.token_urlsafe(16), event.type,
                          json.dumps(payload, separators=(",", ":")).encode())
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped.labels(reason="queue_full").inc()
            return False
        return True

    async def pump(self, manager) -> None:
        """Forever: move the session manager's events onto the queue, dated on the wall clock."""
        while True:
            await asyncio.sleep(EVENT_POLL_S)
            taken = manager.take_events()
            if not taken:
                continue
            offset = time.time() - manager.clock()
            for event in taken:
                self.submit(event, event.now + offset)

    # -- out ----------------------------------------------------------------------------------

    def start(self, manager=None) -> None:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        self._http = aiohttp.ClientSession(timeout=timeout)
        self._tasks = [asyncio.create_task(self._worker(), name=f"webhook-{i}") for i in range(WORKERS)]
        if manager is not None:
            self._tasks.append(asyncio.create_task(self.pump(manager), name="webhook-pump"))

    async def stop(self, manager=None) -> None:
        """Queue `manager`'s last events, give delivery up to FLUSH_S, then stop."""
        if manager is not None:
            offset = time.time() - manager.clock()
            for event in manager.take_events():
                self.submit(event, event.now + offset)
        if self._tasks:
            try:
                await asyncio.wait_for(self.queue.join(), FLUSH_S)
            except TimeoutError:
                log.warning("webhooks: %d event(s) left undelivered at shutdown", self.queue.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _worker(self) -> None:
        while True:
            message = await self.queue.get()
            try:
                for url in self.urls:
                    await self._deliver(url, message)
            finally:
                self.queue.task_done()

    async def _deliver(self, url: str, message: Message) -> bool:
        assert self._http is not None
        for attempt in range(1, self.max_attempts + 1):
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "webhook-id": message.msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self.key, message.msg_id, timestamp, message.body),
            }
            try:
                async with self._http.post(url, data=message.body, headers=headers) as response:
                    if 200 <= response.status < 300:
                        self.deliveries.labels(result="delivered").inc()
                        return True
                    why = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                why = type(e).__name__
            self.deliveries.labels(result="failed_attempt").inc()
            if attempt == self.max_attempts:
                break
            delay = min(BACKOFF_MAX_S, self.backoff_base_s * 2 ** (attempt - 1))
            delay *= 1 + random.uniform(-BACKOFF_JITTER, BACKOFF_JITTER)
            log.info("webhook %s %s to %s: %s; retry %d in %.1f s", message.type, message.msg_id, url, why,
                     attempt, delay)
            await asyncio.sleep(delay)
        self.deliveries.labels(result="gave_up").inc()
        log.warning("webhook %s %s to %s: gave up after %d attempts", message.type, message.msg_id, url,
                    self.max_attempts)
        return False


def from_config(config, registry: CollectorRegistry | None) -> WebhookSender | None:
    """The sender `config` asks for, or None without webhook URLs."""
    if not config.webhook_urls:
        return None
    if not config.webhook_secret:
        raise ValueError("webhook_urls needs a webhook_secret")
    return WebhookSender(config.webhook_urls, config.webhook_secret or "", viewer_events=config.webhook_viewer_events,
                         queue_size=config.webhook_queue_size, registry=registry)


__all__ = ["WebhookSender", "event_payload", "from_config", "sign", "signing_key", "verify"]
