"""One WebRTC transport to one client: ICE-lite, DTLS (server role) and the SRTP keys it yields.

Inputs: `receive_stun(data, addr, now)` (the client's checks, and answers to our consent
requests), `receive_dtls(data, addr, now)`, `handle_timer(now)`, `restart_ice(...)`,
`close(now)`. Outputs: `take_datagrams()` -> `(bytes, addr)` pairs to send, `take_events()` ->
`PathChanged`, `AddressValidated`, `Connected`, `Closed`, and `next_deadline()`. The fast-path
`Endpoint` it owns carries the per-packet state (keys, path); the caller (the session manager)
applies address/path events to the `Router`.

Two addresses are kept apart: the address ICE has selected (the client nominated it, or consent
moved to it) and the media path, where media actually goes. The media path is always an address
that has proven it receives what we send (`core/consent.py`): the one the DTLS handshake was
completed with, or one that answered our own Binding request. A check with valid credentials
from a forged source address so never aims media at a third party (no reflection).
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass

from .. import _fastpath
from ..wire import stun
from .certificate import Certificate
from .consent import ConsentRequests
from .dtls import DtlsClosed, DtlsConnected, DtlsEndpoint, DtlsFailed
from .ice import ConsentExpired, IceLite, PathSelected

Address = tuple


@dataclass(frozen=True)
class AddressValidated:
    """A remote address passed a connectivity check: accept datagrams from it."""

    addr: Address


@dataclass(frozen=True)
class AddressForgotten:
    """A validated address's consent lapsed: stop accepting datagrams from it (a new valid check
    validates it again)."""

    addr: Address


@dataclass(frozen=True)
class PathChanged:
    """Media to this peer now goes to `addr` (selected by ICE and proven to receive what we
    send); None: nowhere, the path's consent lapsed and no other address is proven yet."""

    addr: Address | None


@dataclass(frozen=True)
class Connected:
    """DTLS finished: SRTP keys are in the endpoint; media can flow."""

    profile: int


@dataclass(frozen=True)
class Closed:
    reason: str


def new_ice_credentials() -> tuple[str, str]:
    """RFC 8839 §5.4: ufrag >= 4 and pwd >= 22 ice-chars; ours are 8 and 32 (hex is ice-char)."""
    return secrets.token_hex(4), secrets.token_hex(16)


def plain_address(addr: Address) -> tuple[str, int]:
    """(host, port) with IPv4-mapped IPv6 folded back to IPv4, as a client knows itself."""
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, addr[1]


class Peer:
    """ICE-lite + DTLS + SRTP for one client (publisher or viewer)."""

    def __init__(
        self,
        peer_id: str,
        certificate: Certificate,
        remote_ufrag: str,
        remote_pwd: str,
        remote_fingerprints: list[tuple[str, str]],
        now: float,
        local_ufrag: str | None = None,
        local_pwd: str | None = None,
    ) -> None:
        self.id = peer_id
        if local_ufrag is None or local_pwd is None:
            local_ufrag, local_pwd = new_ice_credentials()
        self.local_ufrag = local_ufrag
        self.local_pwd = local_pwd
        self.remote_ufrag = remote_ufrag
        self.certificate = certificate
        self.ice = IceLite(local_ufrag, local_pwd, remote_ufrag, remote_pwd, now)
        self.consent = ConsentRequests(local_ufrag, remote_ufrag, remote_pwd)
        self.dtls = DtlsEndpoint(certificate, "server", remote_fingerprints, now=now)
        self.endpoint = _fastpath.Endpoint(self)
        self.created_at = now
        self.connected_at: float | None = None
        self.closed: str | None = None
        self.path: Address | None = None  # the media path (verified)
        self.selected: Address | None = None  # what ICE selected (may still await verification)
        self._dtls_addr: Address | None = None  # where the client's DTLS last came from
        self.srtp_profile: int | None = None
        self.drops: Counter[str] = Counter()
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[object] = []
        self._validated: set[Address] = set()
        self._activity = 0

    # -- inputs --------------------------------------------------------------------------------

    def receive_stun(self, data: bytes, addr: Address, now: float) -> None:
        """A Binding request naming this peer (the caller matched its USERNAME), or a message
        without USERNAME from one of its validated addresses: an answer to our consent request."""
        if self.closed:
            return
        if not stun.is_binding_request(data):
            if self.consent.receive_response(data, addr, now):
                self._apply_verified(now)
            return
        response = self.ice.receive_binding(data, plain_address(addr), now)
        if response is not None:
            self._out.append((response, addr))
            if addr not in self._validated and self.ice.address_is_known(plain_address(addr)):
                self._validated.add(addr)
                self._events.append(AddressValidated(addr))
        self._drain_ice(addr, now)

    def receive_dtls(self, data: bytes, addr: Address, now: float) -> str | None:
        """Returns why the datagram was ignored (counted in `drops` as "dtls-<reason>"), or None."""
        if self.closed:
            self.drops["dtls-after-close"] += 1
            return "after-close"
        self._dtls_addr = addr
        dropped = self.dtls.receive(data, now)
        if dropped is not None:
            self.drops[f"dtls-{dropped}"] += 1
        self._drain_dtls(addr, now)
        return dropped

    def handle_timer(self, now: float) -> None:
        if self.closed:
            return
        self.ice.handle_timer(now)
        self._drain_ice(self.selected, now)
        if self.closed:
            return
        self.consent.handle_timer(now)
        self._out.extend(self.consent.take_datagrams())
        self._apply_verified(now)
        deadline = self.dtls.next_deadline()
        if deadline is not None and deadline <= now:
            self.dtls.handle_timer(now)
            self._drain_dtls(self._dtls_addr, now)

    def poll_activity(self, now: float) -> None:
        """Called about once a second: authenticated traffic since the last call keeps the media
        path's consent (the path's, not the session's: see IceLite.media_alive)."""
        seen = self.endpoint.rx_packets + self.endpoint.rtcp_in
        if seen != self._activity:
            self._activity = seen
            if self.path is not None:
                self.ice.media_alive(plain_address(self.path), now)

    def restart_ice(self, remote_ufrag: str, remote_pwd: str, now: float) -> tuple[str, str]:
        """ICE restart (RFC 8445 §2.4): new credentials both ways, the path kept until nominated."""
        self.local_ufrag, self.local_pwd = new_ice_credentials()
        self.remote_ufrag = remote_ufrag
        self.ice.restart(self.local_ufrag, self.local_pwd, remote_ufrag, remote_pwd, now)
        self.consent.set_credentials(self.local_ufrag, remote_ufrag, remote_pwd)
        return self.local_ufrag, self.local_pwd

    def close(self, reason: str, now: float) -> None:
        if self.closed:
            return
        self.dtls.close()
        for data in self.dtls.take_datagrams():
            if self.path is not None:
                self._out.append((data, self.path))
        self.closed = reason
        self._events.append(Closed(reason))
        # the endpoint's owner (this peer, or the session that holds it) refers back to the
        # endpoint: drop the link so a closed session is freed by reference counting at once
        self.endpoint.owner = None

    # -- outputs -------------------------------------------------------------------------------

    def take_datagrams(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def take_events(self) -> list[object]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        if self.closed:
            return None
        deadlines = [
            d for d in (self.ice.next_deadline(), self.dtls.next_deadline(), self.consent.next_deadline())
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    @property
    def validated_addresses(self) -> set[Address]:
        return set(self._validated)

    # -- internals -----------------------------------------------------------------------------

    def _drain_ice(self, addr: Address | None, now: float) -> None:
        for event in self.ice.take_events():
            if isinstance(event, PathSelected):
                self.selected = self._full_address(event.addr, addr)
                self._follow_selection(now)
            elif isinstance(event, ConsentExpired):
                self.close(f"ice: {event.reason}", 0.0)
        for known in [a for a in self._validated if not self.ice.address_is_known(plain_address(a))]:
            self.consent.forget(known)  # consent lapsed: prove it again before media goes there
            self._validated.discard(known)  # and pass a check again before anything is accepted
            self._events.append(AddressForgotten(known))
            if known == self.path:
                self.path = None  # no media to an address whose consent lapsed
                self._events.append(PathChanged(None))
        for reason, count in self.ice.drops.items():
            self.drops[f"ice-{reason}"] = count
        for reason, count in self.consent.drops.items():
            self.drops[reason] = count

    def _follow_selection(self, now: float) -> None:
        """Media follows ICE's selection once the selected address is verified (before DTLS has
        completed there is no media, and DTLS completion verifies its address)."""
        selected = self.selected
        if selected is None or selected == self.path or self.connected_at is None:
            return
        if self.consent.is_verified(selected):
            self._set_path(selected)
        else:
            self.consent.verify(selected, now)
            self._out.extend(self.consent.take_datagrams())

    def _apply_verified(self, now: float) -> None:
        if self.consent.take_verified():
            self._follow_selection(now)
        for reason, count in self.consent.drops.items():
            self.drops[reason] = count

    def _set_path(self, addr: Address) -> None:
        self.path = addr
        self._events.append(PathChanged(addr))

    def _full_address(self, plain: Address, hint: Address | None) -> Address:
        """Map ICE's plain (host, port) back to the socket-family form we received from."""
        for known in self._validated:
            if plain_address(known) == tuple(plain):
                return known
        if hint is not None and plain_address(hint) == tuple(plain):
            return hint
        return tuple(plain)

    def _drain_dtls(self, addr: Address | None, now: float) -> None:
        target = addr or self.path  # flights answer where the client's DTLS came from
        for data in self.dtls.take_datagrams():
            if target is not None:
                self._out.append((data, target))
        for event in self.dtls.take_events():
            if isinstance(event, DtlsConnected):
                keys = event.keys
                rx = _fastpath.SrtpContext(keys.profile, keys.remote_key, keys.remote_salt)
                tx = _fastpath.SrtpContext(keys.profile, keys.local_key, keys.local_salt)
                self.endpoint.set_srtp(rx, tx)
                self.srtp_profile = keys.profile
                self.connected_at = now
                if addr is not None:
                    self.consent.mark_verified(addr)  # the handshake's flights went there and back
                    self.consent.take_verified()
                    if self.selected is not None and not self.consent.is_verified(self.selected):
                        self._set_path(addr)  # media to the proven address while ICE's is asked
                self._follow_selection(now)
                self._events.append(Connected(keys.profile))
            elif isinstance(event, DtlsFailed):
                self.drops["dtls-failed"] += 1
                self.close(f"dtls: {event.reason}", now)
            elif isinstance(event, DtlsClosed):
                self.close("dtls: close_notify", now)
