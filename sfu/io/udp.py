"""The shared UDP media port: one socket, one reader callback, one timer for the whole process.

No protocol decisions here (DESIGN.md "io/"): the fast-path `Router` drains and forwards; the rare
datagrams it hands back go to the session manager, whose outputs this shell sends; the manager's
single `next_deadline()` is the one timer armed on the loop.

Media first, but not media only:
- Python work (the datagrams the router hands back, the manager's timer sweeps over every session)
  holds forwarded media back for about `MEDIA_POLL_BUDGET_S` at most: after that much Python time the
  socket is drained again (`poll_media`), media is forwarded at once and the new control datagrams
  join the queue behind the ones already waiting. The manager calls `poll_media` between sessions in
  its sweeps (`SessionManager.media_poll`).
- Under load a drain can take milliseconds (one packet to hundreds of viewers; the router stops
  after `MAX_FORWARD_PER_WAKEUP` forwarded packets): Python work then gets at least
  `CONTROL_SHARE` of the time a drain took before the next drain, so control traffic (STUN, DTLS,
  RTCP) keeps up.
- One call handles only the control datagrams queued when it started; the rest wait for the next
  loop iteration, so HTTP requests and other callbacks always get their turn.

Source addresses. On a host with several addresses and the socket on a wildcard address, every
datagram leaves from the local address its peer sent to (IP_PKTINFO / IPV6_RECVPKTINFO on the socket;
the router notes each datagram's destination): an answer from the address the datagram being
answered arrived on, anything else to a peer's path from that path's (`Router.sendto`, `set_path`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter, deque

from .. import _fastpath
from ..core.sessions import SessionManager

log = logging.getLogger("sfu.udp")

SOCKET_BUFFER_BYTES = 8 * 1024 * 1024  # absorb bursts (keyframes times viewers) between wake-ups
MEDIA_POLL_BUDGET_S = 0.0002  # Python work between two drains of the socket, at most (about) ...
CONTROL_SHARE = 0.5  # ... unless the last drain took longer: then this share of its duration
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux; Python 3.11 does not name it
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
# control datagrams waiting for Python, at most: a flood of STUN-looking junk from anywhere arrives
# faster than Python handles it and the queue grew without bound (docs/security.md "Floods and
# leaks"); past this, datagrams from addresses no session has validated are dropped first (counted
# as "control-queue-full" in the manager's counters), then any. 8192 is ~40 ms of Python work.
MAX_CONTROL_QUEUE = 8192


def open_media_socket(host: str, port: int, ipv6: bool) -> socket.socket:
    """Bind the media port (`udp_host`, `sfu serve --udp-host`): dual-stack `::` when asked and
    possible for a wildcard host, else `host` itself (IPv6 when it has a colon)."""
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

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, gso: bool = True) -> None:
        self.sock = sock
        self.loop = loop
        try:  # kernel receive times: the router measures how long media waited in the socket
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError as exc:
            log.warning("no kernel receive timestamps on the media socket (%s): the overload guard "
                        "cannot see media waiting and will never lower layers", exc)
        try:  # each datagram's local address, so that answers leave from it (see the module docstring)
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)  # IPv4-mapped ones too
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        except OSError as exc:
            log.warning("no IP_PKTINFO on the media socket (%s): on a host with several addresses, "
                        "bind it to one (--udp-host) or peers may not get answers", exc)
        self.router = _fastpath.Router(sock.fileno(), sock.family, gso)
        self.manager: SessionManager | None = None
        self.send_errors: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._slow: deque[tuple] = deque()  # datagrams for the manager, oldest first
        self._answers: list[tuple[bytes, tuple, int]] = []  # (data, addr, local index) to send
        self._drained_at = 0.0  # perf_counter() of the last drain
        self._poll_after = MEDIA_POLL_BUDGET_S  # Python time owed before the next drain
        self._handling = False  # inside _handle_slow (drains then only queue)
        self._continue: asyncio.Handle | None = None  # _handle_slow scheduled for the next iteration
        self.media_polls = 0  # drains made in the middle of Python work

    def start(self, manager: SessionManager) -> None:
        self.manager = manager
        manager.on_wakeup = self.arm_timer
        manager.media_poll = self.poll_media
        self.loop.add_reader(self.sock.fileno(), self._on_readable)
        self.arm_timer()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._continue is not None:
            self._continue.cancel()
            self._continue = None
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.flush()
        self.sock.close()

    def _drain(self) -> None:
        """Forward the media waiting in the socket; queue what the manager must handle."""
        started = time.perf_counter()
        slow = self.router.on_readable(self.loop.time())
        self._drained_at = time.perf_counter()
        self._poll_after = max(MEDIA_POLL_BUDGET_S, (self._drained_at - started) * CONTROL_SHARE)
        if slow:
            if len(self._slow) + len(slow) > MAX_CONTROL_QUEUE:
                slow = self._shed(slow)
            self._slow.extend(slow)

    def _shed(self, slow: list[tuple]) -> list[tuple]:
        """The queue is full: keep what comes from known endpoints while there is room for it."""
        room = MAX_CONTROL_QUEUE - len(self._slow)
        known = [item for item in slow if item[1] is not None or item[0] == _fastpath.KIND_LOSS]
        kept = known[:max(0, room)]
        if self.manager is not None:
            self.manager.counters["control-queue-full"] += len(slow) - len(kept)
        return kept

    def poll_media(self) -> None:
        """Called between units of Python work: drain the socket if Python had its share."""
        if time.perf_counter() - self._drained_at >= self._poll_after:
            self.media_polls += 1
            self._drain()

    def _on_readable(self) -> None:
        self._drain()
        if self._slow:
            self._handle_slow()

    def _handle_slow(self) -> None:
        """Handle the control datagrams queued now (not those that arrive meanwhile: they wait for
        the next loop iteration, after HTTP and the other callbacks)."""
        if self._continue is not None:  # called directly while a continuation waits: it is this
            self._continue.cancel()
            self._continue = None
        if self._handling:
            return
        self._handling = True
        manager = self.manager
        queue = self._slow
        try:
            for _ in range(len(queue)):
                kind, endpoint, data, addr, local = queue.popleft()
                if addr is not None:
                    self.router.note_arrival(addr, local)
                manager.handle_datagram(kind, endpoint, data, addr, self.loop.time())
                if addr is not None:  # what answers it leaves from where it arrived
                    self._answers.extend(
                        (out, to, local if to == addr else -1) for out, to in manager.take_datagrams())
                self.poll_media()
        finally:
            self._handling = False
        self.flush()
        self.arm_timer()
        if queue and self._continue is None:
            self._continue = self.loop.call_soon(self._handle_slow)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        try:
            self.manager.handle_timer(self.loop.time())
        except Exception:
            log.exception("error in the session manager's timer")
        if self._slow:
            self._handle_slow()  # flushes and re-arms
        else:
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
        """Send what the manager produced: answers from the local address of what they answer,
        the rest from that of the path they go to (-1: the router looks it up)."""
        if self.manager is None:
            return
        answers, self._answers = self._answers, []
        answers.extend((data, addr, -1) for data, addr in self.manager.take_datagrams())
        for data, addr, local in answers:
            try:
                self.router.sendto(data, addr, local)
            except (BlockingIOError, InterruptedError):
                self.send_errors["would-block"] += 1
            except OSError as exc:
                self.send_errors[type(exc).__name__] += 1
            except ValueError:  # not an IP address of the socket's family
                self.send_errors["bad-address"] += 1
