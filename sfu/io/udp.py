"""The shared UDP media port: one socket, one reader callback, one timer for the whole process.

No protocol decisions here (DESIGN.md "io/"): the fast-path `Router` drains and forwards; the rare
datagrams it hands back go to the session manager, whose outputs this shell sends; the manager's
single `next_deadline()` is the one timer armed on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter

from .. import _fastpath
from ..core.sessions import SessionManager

log = logging.getLogger("sfu.udp")

SOCKET_BUFFER_BYTES = 8 * 1024 * 1024  # absorb bursts (keyframes times viewers) between wake-ups


def open_media_socket(host: str, port: int, ipv6: bool) -> socket.socket:
    """Bind the media port: dual-stack `::` when asked and possible, else the IPv4 `host`."""
    sock: socket.socket | None = None
    if ipv6 and socket.has_ipv6 and host in ("0.0.0.0", "::", ""):
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        except OSError:
            if sock is not None:
                sock.close()
            sock = None
    if sock is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((host, port))
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        except OSError:
            pass
    sock.setblocking(False)
    return sock


class MediaPort:
    """Glue between the socket, the fast-path router and the session manager."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.loop = loop
        self.router = _fastpath.Router(sock.fileno(), sock.family)
        self.manager: SessionManager | None = None
        self.send_errors: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def start(self, manager: SessionManager) -> None:
        self.manager = manager
        manager.on_wakeup = self.arm_timer
        self.loop.add_reader(self.sock.fileno(), self._on_readable)
        self.arm_timer()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.flush()
        self.sock.close()

    def _on_readable(self) -> None:
        manager = self.manager
        now = self.loop.time()
        slow = self.router.on_readable(now)
        if slow:
            for kind, endpoint, data, addr in slow:
                manager.handle_datagram(kind, endpoint, data, addr, now)
            self.flush()
            self.arm_timer()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        try:
            self.manager.handle_timer(self.loop.time())
        except Exception:
            log.exception("error in the session manager's timer")
        self.flush()
        self.arm_timer()

    def arm_timer(self) -> None:
        deadline = self.manager.next_deadline()
        if deadline >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def flush(self) -> None:
        if self.manager is None:
            return
        for data, addr in self.manager.take_datagrams():
            try:
                self.sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                self.send_errors["would-block"] += 1
            except OSError as exc:
                self.send_errors[type(exc).__name__] += 1
