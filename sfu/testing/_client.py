"""What a packet-level WHIP/WHEP client does before and around media: signalling over HTTP,
ICE as the controlling full agent against an ICE-lite server (RFC 8445 regular nomination,
RFC 7675 consent checks), DTLS as client, SRTP contexts, and one timer for all periodic work.

Driven by: API calls (`_connect`, `stop`), datagrams from its UDP sockets, and one
`loop.call_at` timer re-armed to the earliest deadline. Subclasses add media in `_periodic`
(returns their next deadline), `_on_rtp` and `_on_rtcp`. No task per feature, no coroutine
per packet: the receive path runs in `datagram_received`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
from yarl import URL

from sfu.core.certificate import Certificate
from sfu.core.dtls import DtlsClosed, DtlsConnected, DtlsEndpoint, DtlsFailed
from sfu.testing._dtls import SrtpLike, make_dtls_client, make_srtp, profile_name
from sfu.testing.sdp import Answer, ice_credentials, parse_answer
from sfu.wire import stun

ICE_CHECK_INTERVAL_S = 0.05  # pacing of checks until a pair succeeds (RFC 8445 §14.2 Ta)
CONSENT_INTERVAL_S = 2.5  # consent freshness on the selected pair (RFC 7675 §5.1: ~5 s or less)
EXTRA_CHECK_INTERVAL_S = 0.5  # browsers keep checking their other pairs about this often
CONNECT_TIMEOUT_S = 10.0
EARLY_SRTP_MAX = 64  # SRTP datagrams kept while the DTLS handshake finishes on our side
TRANSACTION_TTL_S = 5.0  # forget unanswered check transactions after this
WAIT_POLL_S = 0.01  # wait_for re-evaluates its predicate this often
# RFC 8445 §5.1.2.1 priority of our peer-reflexive candidates: type preference 110
PRFLX_TYPE_PREFERENCE = 110


class WhipWhepError(Exception):
    """The server refused the offer (any status but 201)."""

    def __init__(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status
        self.body = body
        self.headers = headers or {}


class WhipError(WhipWhepError):
    pass


class WhepError(WhipWhepError):
    pass


@dataclass(slots=True)
class SocketStats:
    index: int
    local: tuple[str, int]
    nominating: bool  # only the main socket (index 0) ever sends USE-CANDIDATE
    stun_sent: int = 0
    stun_success: int = 0
    stun_errors: int = 0
    dtls: int = 0
    rtp: int = 0
    rtcp: int = 0
    dropped: int = 0
    media_sources: dict[tuple[str, int], int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "local": self.local, "nominating": self.nominating,
            "stun_sent": self.stun_sent, "stun_success": self.stun_success,
            "stun_errors": self.stun_errors, "dtls": self.dtls, "rtp": self.rtp,
            "rtcp": self.rtcp, "dropped": self.dropped, "media_sources": dict(self.media_sources),
        }


class _SocketProtocol(asyncio.DatagramProtocol):
    def __init__(self, client: _Client, index: int) -> None:
        self.client = client
        self.index = index
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client._datagram(self.index, data, addr)

    def error_received(self, exc: Exception) -> None:
        self.client._count_drop("socket-error")


RETRY_AFTER_DEFAULT_S = 1.0  # a 409 without a usable Retry-After
RETRY_AFTER_MIN_S = 0.05  # never spin


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (RFC 9110 §10.2.3: delay-seconds; an HTTP date is not
    expected from a media server and counts as the default)."""
    try:
        return max(RETRY_AFTER_MIN_S, float(value)) if value is not None else RETRY_AFTER_DEFAULT_S
    except ValueError:
        return RETRY_AFTER_DEFAULT_S


def _priority(local_preference: int) -> int:
    return (PRFLX_TYPE_PREFERENCE << 24) | (local_preference << 8) | (256 - 1)


class _Client:
    _error_class: type[WhipWhepError] = WhipWhepError

    def __init__(
        self, url: str, token: str | None, *, srtp_profiles: tuple[str, ...], local_addr: str,
        extra_check_addrs: int = 0, connect_timeout: float = CONNECT_TIMEOUT_S,
        http: aiohttp.ClientSession | None = None, certificate: Certificate | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.local_addr = local_addr
        self.connect_timeout = connect_timeout
        self.srtp_profiles = [profile_name(p) for p in srtp_profiles]
        self.extra_check_addrs = extra_check_addrs
        self.resource_url: str | None = None
        self.etag: str | None = None
        self.answer: Answer | None = None
        self.answer_sdp: str | None = None
        self.offer_sdp: str | None = None
        self.srtp_profile: str | None = None
        self.dtls_state = "new"
        self.selected_remote: tuple[str, int] | None = None
        self.started_at: float | None = None
        self.answered_at: float | None = None  # the 201 and its answer arrived
        self.ice_selected_at: float | None = None  # the nominating check was answered
        self.connected_at: float | None = None
        self.drops: dict[str, int] = {}
        self.wait_for_publisher = 0.0  # seconds to retry a 409 (stream not live); see PacketViewer
        self.not_live_retries = 0
        self._http = http
        self._own_http = http is None
        self._ice_ufrag, self._ice_pwd = ice_credentials()
        self._tie_breaker = int.from_bytes(os.urandom(8), "big")
        # A browser makes one per RTCPeerConnection; a load tool may share one (0.5 ms each to make)
        self._certificate = certificate or Certificate.generate(time.time(), lifetime_days=2)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sockets: list[_SocketProtocol] = []
        self._socket_stats: list[SocketStats] = []
        self._remotes: list[tuple[str, int]] = []
        self._transactions: dict[bytes, tuple[int, tuple[str, int], bool, float]] = {}
        self._ice_state = "new"  # new, checking, nominating, selected
        self._next_check = 0.0
        self._next_consent = 0.0
        self._next_extra = 0.0
        self._dtls: DtlsEndpoint | None = None
        self._tx: SrtpLike | None = None
        self._rx: SrtpLike | None = None
        self._connected: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = float("inf")
        self._closed = False
        self._early_srtp: list[tuple[int, bytes, tuple[str, int]]] = []  # SRTP before the keys

    # --- signalling ---------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def _signal(self, url: str, offer: str) -> Answer:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        self.offer_sdp = offer
        headers = {**self._headers(), "Content-Type": "application/sdp"}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_for_publisher
        while True:
            async with self._http.post(url, data=offer.encode(), headers=headers) as response:
                body = await response.text()
                if response.status == 409 and loop.time() < deadline:
                    # draft-ietf-wish-whep: 409 + Retry-After while the stream is not live
                    self.not_live_retries += 1
                    delay = _retry_after(response.headers.get("Retry-After"))
                    await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))
                    continue
                if response.status != 201:
                    raise self._error_class(response.status, body, dict(response.headers))
                break
        location = response.headers.get("Location")
        if location:
            self.resource_url = str(response.url.join(URL(location)))
        self.etag = response.headers.get("ETag")
        self.answer_sdp = body
        self.answer = parse_answer(body)
        return self.answer

    # --- connection ---------------------------------------------------------------------

    async def _connect(self, url: str, offer: str) -> Answer:
        """POST the offer, then ICE + DTLS; returns once SRTP keys are in place."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.started_at = loop.time()
        try:
            answer = await self._signal(url, offer)
            self.answered_at = loop.time()
            self._on_answer(answer)
            self._remotes = [
                (c.host, c.port) for c in answer.candidates
                if c.transport == "udp" and c.component == 1 and (":" in c.host) == (":" in self.local_addr)
            ]
            if not self._remotes:
                raise ConnectionError("answer has no usable UDP candidate")
            for index in range(1 + self.extra_check_addrs):
                protocol, sockname = await self._open_socket(loop, index)
                self._sockets.append(protocol)
                self._socket_stats.append(SocketStats(index, sockname, index == 0))
            self._connected = loop.create_future()
            self._ice_state = "checking"
            self._arm(loop.time())
            try:
                await asyncio.wait_for(asyncio.shield(self._connected), self.connect_timeout)
            except TimeoutError:
                raise ConnectionError(
                    f"not connected after {self.connect_timeout}s (ice {self._ice_state}, "
                    f"dtls {'started' if self._dtls else 'not started'})"
                ) from None
            self.connected_at = loop.time()
            return answer
        except BaseException:
            await self.stop()
            raise

    async def _open_socket(
        self, loop: asyncio.AbstractEventLoop, index: int
    ) -> tuple[_SocketProtocol, tuple[str, int]]:
        """One local UDP socket; its datagrams go to `_datagram(index, ...)`. A subclass may read
        the socket its own way (the load tester does) as long as `.transport` has `sendto` and
        `close`."""
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _SocketProtocol(self, index), local_addr=(self.local_addr, 0)
        )
        return protocol, transport.get_extra_info("sockname")[:2]

    async def start(self) -> None:  # overridden
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        """`async with Client(...) as client`: `start()`, and `stop()` (DELETE) on the way out."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """DELETE the WHIP/WHEP resource (if any), close sockets and the HTTP session."""
        if self._closed:
            return
        if self.resource_url and self._http is not None and not self._http.closed:
            try:
                async with self._http.delete(self.resource_url, headers=self._headers()) as response:
                    await response.read()
            except aiohttp.ClientError:
                self._count_drop("delete-failed")
        if self._dtls is not None and self.dtls_state == "connected":
            self._dtls.close()  # close_notify, as browsers send on pc.close()
            for datagram in self._dtls.take_datagrams():
                self._send(datagram)
        await self._close()

    async def _close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for protocol in self._sockets:
            if protocol.transport is not None:
                protocol.transport.close()
        if self._own_http and self._http is not None:
            await self._http.close()
        if self._connected is not None and not self._connected.done():
            self._connected.cancel()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once `predicate()` is true; raise TimeoutError (with stats) at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s; stats={self._summary()}")
            await asyncio.sleep(min(WAIT_POLL_S, remaining))

    @property
    def stats(self) -> dict[str, Any]:  # overridden
        return {}

    def _summary(self) -> dict[str, Any]:
        """`stats` without the latency sample lists (for error messages)."""
        return {
            key: {k: v for k, v in value.items() if k != "latency_ns"} if isinstance(value, dict) else value
            for key, value in self.stats.items()
        }

    @property
    def socket_stats(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self._socket_stats]

    # --- timer --------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        if self._closed or when >= self._timer_when:
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer_when = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = float("inf")
        if self._closed:
            return
        assert self._loop is not None
        now = self._loop.time()
        deadline = self._ice_tick(now)
        if self._dtls is not None:
            dtls_deadline = self._dtls.next_deadline()
            if dtls_deadline is not None and dtls_deadline <= now:
                self._dtls.handle_timer(now)
                self._dtls_flush(now)
                dtls_deadline = self._dtls.next_deadline()
            if dtls_deadline is not None:
                deadline = min(deadline, dtls_deadline)
        if self._tx is not None:
            deadline = min(deadline, self._periodic(now))
        self._arm(max(deadline, now + 0.001))

    def _periodic(self, now: float) -> float:
        return now + 1.0

    # --- ICE ----------------------------------------------------------------------------

    def _send_check(self, index: int, addr: tuple[str, int], nominate: bool, now: float) -> None:
        assert self.answer is not None
        tid, data = stun.binding_request(
            f"{self.answer.ice_ufrag}:{self._ice_ufrag}", self.answer.ice_pwd,
            use_candidate=nominate, priority=_priority(65535 - index), controlling=True,
            tie_breaker=self._tie_breaker,
        )
        self._transactions[tid] = (index, addr, nominate, now)
        self._sendto(index, data, addr)
        self._socket_stats[index].stun_sent += 1

    def _ice_tick(self, now: float) -> float:
        deadline = now + 1.0
        if len(self._transactions) > 64:
            self._transactions = {
                tid: t for tid, t in self._transactions.items() if now - t[3] < TRANSACTION_TTL_S
            }
        if self._ice_state in ("checking", "nominating"):
            if now >= self._next_check:
                if self._ice_state == "checking":
                    for addr in self._remotes:
                        self._send_check(0, addr, False, now)
                else:
                    assert self.selected_remote is not None
                    self._send_check(0, self.selected_remote, True, now)
                self._next_check = now + ICE_CHECK_INTERVAL_S
            deadline = min(deadline, self._next_check)
        elif self._ice_state == "selected":
            if now >= self._next_consent:
                assert self.selected_remote is not None
                self._send_check(0, self.selected_remote, False, now)
                self._next_consent = now + CONSENT_INTERVAL_S
            deadline = min(deadline, self._next_consent)
        if len(self._sockets) > 1:
            if now >= self._next_extra:
                target = self.selected_remote or self._remotes[0]
                for index in range(1, len(self._sockets)):
                    self._send_check(index, target, False, now)
                self._next_extra = now + EXTRA_CHECK_INTERVAL_S
            deadline = min(deadline, self._next_extra)
        return deadline

    def _on_stun(self, index: int, data: bytes, addr: tuple[str, int], now: float) -> None:
        assert self.answer is not None
        try:
            message = stun.parse_response(data)
        except stun.StunError:
            self._count_drop("stun-malformed")
            return
        if message.message_class == stun._stun.Class.REQUEST:
            self._answer_check(index, message, addr)
            return
        pending = self._transactions.pop(message.transaction_id, None)
        if pending is None:
            self._count_drop("stun-unexpected")
            return
        sent_index, sent_addr, nominate, _ = pending
        if not message.check_message_integrity(self.answer.ice_pwd.encode()):
            self._count_drop("stun-bad-integrity")
            return
        if message.message_class != stun._stun.Class.RESPONSE:
            self._socket_stats[index].stun_errors += 1
            return
        self._socket_stats[index].stun_success += 1
        if sent_index != 0:
            return
        if self._ice_state == "checking":
            self.selected_remote = sent_addr
            self._ice_state = "nominating"
            self._next_check = now
            self._arm(now)
        elif self._ice_state == "nominating" and nominate and sent_addr == self.selected_remote:
            self._ice_state = "selected"
            self.ice_selected_at = now
            self._next_consent = now + CONSENT_INTERVAL_S
            self._start_dtls(now)

    def _answer_check(self, index: int, request: Any, addr: tuple[str, int]) -> None:
        """Answer the server's own Binding request (its RFC 7675 consent check, which proves
        that this socket receives what the server sends), as every full ICE agent does."""
        if not request.check_message_integrity(self._ice_pwd.encode()):
            self._count_drop("stun-request-bad-integrity")
            return
        response = stun._stun.Message(
            stun._stun.Method.BINDING, stun._stun.Class.RESPONSE, request.transaction_id,
            {"XOR-MAPPED-ADDRESS": (addr[0], addr[1])},
        )
        response.add_message_integrity(self._ice_pwd.encode())
        response.add_fingerprint()
        self._sendto(index, bytes(response), addr)

    # --- DTLS / SRTP --------------------------------------------------------------------

    def _start_dtls(self, now: float) -> None:
        assert self.answer is not None
        self._dtls = make_dtls_client(
            self._certificate, self.answer.fingerprints, self.srtp_profiles, now
        )
        self._dtls.start(now)
        self._dtls_flush(now)

    def _dtls_flush(self, now: float) -> None:
        assert self._dtls is not None
        for datagram in self._dtls.take_datagrams():
            self._send(datagram)
        for event in self._dtls.take_events():
            if isinstance(event, DtlsConnected):
                self.dtls_state = "connected"
                self.srtp_profile = profile_name(event.profile)
                keys = event.keys
                self._tx = make_srtp(self.srtp_profile, keys.local_key, keys.local_salt, outbound=True)
                self._rx = make_srtp(self.srtp_profile, keys.remote_key, keys.remote_salt, outbound=False)
                self._on_connected(now)
                early, self._early_srtp = self._early_srtp, []
                for index, data, addr in early:  # media that overtook the handshake's last flight
                    self._datagram(index, data, addr)
                if self._connected is not None and not self._connected.done():
                    self._connected.set_result(None)
                self._arm(now)
            elif isinstance(event, DtlsFailed):
                self.dtls_state = f"failed: {event.reason}"
                if self._connected is not None and not self._connected.done():
                    self._connected.set_exception(ConnectionError(f"DTLS failed: {event.reason}"))
            elif isinstance(event, DtlsClosed):
                self.dtls_state = "closed"  # the server sent close_notify

    def _on_answer(self, answer: Answer) -> None:
        """Read negotiated parameters; raise to abort (the session is then closed)."""

    def _on_connected(self, now: float) -> None:
        pass

    # --- datagrams ----------------------------------------------------------------------

    def _count_drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _sendto(self, index: int, data: bytes, addr: tuple[str, int]) -> None:
        transport = self._sockets[index].transport
        if transport is not None and not self._closed:
            transport.sendto(data, addr)

    def _send(self, data: bytes) -> None:
        """To the selected pair, from the main socket."""
        if self.selected_remote is not None:
            self._sendto(0, data, self.selected_remote)

    def _send_rtcp(self, plain: bytes) -> None:
        if self._tx is not None:
            self._send(self._tx.protect_rtcp_packet(plain))

    def _datagram(self, index: int, data: bytes, addr: tuple[str, int]) -> None:
        """RFC 7983 §7 demultiplexing by first byte."""
        if not data:
            return
        first = data[0]
        sock = self._socket_stats[index]
        if 127 < first < 192:
            if self._rx is None:
                # The server's media can overtake the last DTLS flight (it is connected as soon as
                # our Finished arrives): keep a few packets for when the keys are there, as
                # browsers' SRTP transports do, rather than lose the keyframe that starts a stream.
                if len(self._early_srtp) < EARLY_SRTP_MAX:
                    self._early_srtp.append((index, data, addr))
                    return
                sock.dropped += 1
                self._count_drop("srtp-not-ready")
                return
            if len(data) > 1 and 192 <= data[1] <= 223:
                sock.rtcp += 1
                self._on_rtcp(index, data, addr)
            else:
                sock.rtp += 1
                sources = sock.media_sources
                sources[addr] = sources.get(addr, 0) + 1
                self._on_rtp(index, data, addr)
            return
        assert self._loop is not None
        now = self._loop.time()
        if first < 4:
            self._on_stun(index, data, addr, now)
        elif 19 < first < 64:
            sock.dtls += 1
            if self._dtls is None or index != 0:
                sock.dropped += 1
                self._count_drop("dtls-unexpected")
                return
            self._dtls.receive(data, now)
            self._dtls_flush(now)
            deadline = self._dtls.next_deadline()
            if deadline is not None:
                self._arm(deadline)
        else:
            sock.dropped += 1
            self._count_drop("unknown-first-byte")

    def _on_rtp(self, index: int, data: bytes, addr: tuple[str, int]) -> None:
        self._count_drop("rtp-unexpected")

    def _on_rtcp(self, index: int, data: bytes, addr: tuple[str, int]) -> None:
        self._count_drop("rtcp-unexpected")
