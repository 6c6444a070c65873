"""The server: HTTP signalling, the shared UDP media port and the session manager, in one process.

    async with sfu.Server(sfu.Config.for_tests()) as server:
        server.whip_url("shop1"), server.whep_url("shop1"), server.mint_token("shop1", publish=True)

`sfu serve` runs the same object with the configured ports; tests and other projects embed it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from prometheus_client import CollectorRegistry

from . import tokens
from .config import Config, resolve_publish_keys_file, resolve_token_secret
from .core.certificate import CertificateStore
from .core.sessions import SessionManager
from .io.admin import Ops
from .io.drain import Drain
from .io.http import build_app
from .io.tls import bind_error, metrics_app, server_ssl_context
from .keys import KeySet
from .publish_keys import PublishKeys
from .io.http_guard import HTTP_KEEPALIVE_S, HttpGuard, automatic_cap, raise_open_files_limit
from .io.interfaces import discover_addresses
from .io.log_limits import install as install_log_guard
from .io.memory import CHECK_INTERVAL_S as HEAP_CHECK_INTERVAL_S, HeapTrimmer
from .io.udp import MediaPort, open_media_socket
from .io import webhooks
from .metrics import register_server_metrics

log = logging.getLogger("sfu")

HTTP_BACKLOG = 4096  # pending HTTP connections the listening socket queues


class Server:
    """An sfu node: `start()` / `stop()`, or `async with`."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self.registry = CollectorRegistry()
        self.manager: SessionManager | None = None
        self.media: MediaPort | None = None
        self._runner: web.AppRunner | None = None
        self._http_port: int | None = None
        self.http_guard: HttpGuard | None = None
        self.heap = HeapTrimmer()
        self._heap_task: asyncio.Task | None = None
        self.token_secret: str | None = None
        self.advertised_addresses: list[str] = []
        self.keys: KeySet | None = None  # token signing keys and revocations (sfu/keys.py)
        self.publish_keys: PublishKeys | None = None  # encoders' long-lived publish keys
        self.drain = Drain(self.config.drain_timeout)  # sfu/io/drain.py: SIGTERM, POST /admin/drain
        self._metrics_runner: web.AppRunner | None = None
        self.metrics_port: int | None = None  # with config.metrics_listen
        self.webhooks: webhooks.WebhookSender | None = None

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        self.log_guard = install_log_guard()  # logs redacted and rate-limited per cause (io/log_limits.py)
        self.token_secret, created = resolve_token_secret(config)
        if created:
            log.info("generated a token secret in %s", config.token_secret_file)
        self.keys = KeySet.from_config(self.token_secret, config.token_keys)
        self.publish_keys = PublishKeys(resolve_publish_keys_file(config))  # encoders' keys (hashed)
        ssl_context = server_ssl_context(config.tls_cert, config.tls_key)  # ConfigError before any bind
        try:
            sock = open_media_socket(config.udp_host, config.udp_port, config.udp_ipv6)
        except OSError as e:
            raise bind_error(e, "UDP media", config.udp_host, config.udp_port) from e
        self.media = MediaPort(sock, loop, gso=config.udp_gso)
        self.advertised_addresses = list(config.public_ips) or discover_addresses(
            sock.family == __import__("socket").AF_INET6, config.include_loopback
        )
        if not self.advertised_addresses:
            raise RuntimeError("no address to advertise: set public_ips (--public-ip)")
        certificates = CertificateStore(lifetime_days=config.cert_lifetime_days)
        self.manager = SessionManager(
            config,
            self.media.router,
            self.advertised_addresses,
            sock.getsockname()[1],
            certificates,
            clock=loop.time,
            wall_clock=time.time,
        )
        self.media.start(self.manager)
        self.webhooks = webhooks.from_config(config, self.registry)  # None without webhook_urls
        if self.webhooks is not None:
            self.webhooks.start(self.manager)
        register_server_metrics(self.registry, self)
        app = build_app(config, self.manager, self.registry, token_secret=self.token_secret,
                        ops=Ops(self.keys, self.drain, self.publish_keys))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=HTTP_KEEPALIVE_S)
        await self._runner.setup()
        # slow clients and the open-files limit (docs/security.md "Floods and leaks")
        soft_nofile, _ = raise_open_files_limit()
        cap = config.max_http_connections or automatic_cap(soft_nofile)
        self.http_guard = HttpGuard(config.http_header_timeout_s, cap, loop)
        self.http_guard.attach(self._runner.server)
        if self.heap.available:
            self._heap_task = asyncio.create_task(self._trim_heap())
        # a join storm opens hundreds of connections at once: aiohttp's default backlog (128)
        # overflows and clients wait for SYN retransmits (the kernel caps it at somaxconn)
        site = web.TCPSite(self._runner, config.http_host, config.http_port, backlog=HTTP_BACKLOG,
                           ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as e:
            raise bind_error(e, "HTTP", config.http_host, config.http_port) from e
        server = site._server  # aiohttp keeps the bound sockets here
        self._http_port = server.sockets[0].getsockname()[1] if server and server.sockets else config.http_port
        if config.metrics_listen:
            host, _, port = config.metrics_listen.rpartition(":")
            self._metrics_runner = web.AppRunner(metrics_app(self.registry), access_log=None, handle_signals=False)
            await self._metrics_runner.setup()
            try:
                metrics_site = web.TCPSite(self._metrics_runner, host.strip("[]"), int(port))
                await metrics_site.start()
            except OSError as e:
                raise bind_error(e, "metrics", host, int(port)) from e
            bound = metrics_site._server
            self.metrics_port = bound.sockets[0].getsockname()[1] if bound and bound.sockets else int(port)
        log.info("sfu listening: HTTP %s, UDP media port %d, advertising %s",
                 self.http_url, self.udp_port, ", ".join(self.advertised_addresses))

    def begin_drain(self, deadline_s: float | None = None, reason: str = "SIGTERM") -> bool:
        """Stop taking new sessions; `self.drain.done` is set once the last one ended or the
        deadline (default `config.drain_timeout`) closed them. False if already draining."""
        assert self.manager is not None, "start() first"
        return self.drain.start(self.manager, deadline_s, reason)

    async def _trim_heap(self) -> None:
        """After bursts of ended sessions, give the freed heap back (sfu/io/memory.py)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HEAP_CHECK_INTERVAL_S)
            counters = self.manager.counters if self.manager else {}
            self.heap.poll(counters.get("closed-whep", 0) + counters.get("closed-whip", 0), loop.time())

    async def stop(self) -> None:
        if self._heap_task is not None:
            self._heap_task.cancel()
            self._heap_task = None
        self.drain.stop()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        if self.manager is not None:
            self.manager.close_all("server stopping")
        if self.media is not None:
            self.media.stop()
            self.media = None
        if self.webhooks is not None:
            await self.webhooks.stop(self.manager)  # delivers the events of the sessions just closed
            self.webhooks = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def serve_forever(self) -> None:
        await asyncio.Event().wait()

    # -- addresses -----------------------------------------------------------------------------

    @property
    def udp_port(self) -> int:
        return self.manager.udp_port if self.manager else self.config.udp_port

    @property
    def http_port(self) -> int:
        return self._http_port or self.config.http_port

    @property
    def http_url(self) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        host = self.config.http_host
        if host in ("0.0.0.0", "::", ""):
            host = self.advertised_addresses[0] if self.advertised_addresses else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{host}:{self.http_port}"

    def whip_url(self, stream: str) -> str:
        return f"{self.http_url}/whip/{stream}"

    def whep_url(self, stream: str) -> str:
        return f"{self.http_url}/whep/{stream}"

    def mint_token(self, stream: str, publish: bool = False, subscribe: bool = False,
                   ttl_s: float = tokens.DEFAULT_TTL_S, participant: str | None = None) -> str:
        assert self.keys is not None, "start() first"
        return self.keys.mint(stream, publish=publish, subscribe=subscribe, ttl_s=ttl_s, participant=participant)

    def mint_admin_token(self, ttl_s: float = tokens.DEFAULT_TTL_S, participant: str | None = None) -> str:
        """A token for the admin API, /api/stats and /metrics."""
        assert self.keys is not None, "start() first"
        return self.keys.mint("*", admin=True, ttl_s=ttl_s, participant=participant)

    def stats(self) -> dict:
        return self.manager.stats() if self.manager else {}
