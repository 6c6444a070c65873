"""Return routability of a media path: the server's own Binding requests (RFC 7675).

An ICE-lite server never checks; it learns a client's addresses from the client's checks. A
valid check proves that someone who knows the session's credentials sent it, not that its
source address wants media: the client itself (a viewer knows its own credentials) can forge a
check from a third party's address and so aim the session's media at it (a reflection attack).
Media therefore goes only to an address that has shown it *receives* what the server sends:
- the address the DTLS handshake was completed with (our flights went there and were answered:
  the peer marks it with `mark_verified`), or
- an address that answered one of our consent requests: a Binding request on that path signed
  with the client's password, whose random transaction id only a real receiver at that address
  sees (RFC 7675 §5.1, the request as in RFC 8445 §7.2).

Inputs: `verify(addr, now)` (the path we would like to send media on), `receive_response(data,
addr, now)`, `handle_timer(now)`, `mark_verified(addr)`, `set_credentials(...)` (ICE restart).
Outputs: `take_datagrams()` (requests to send), `take_verified()` (addresses verified since the
last call), `next_deadline()`, `is_verified(addr)`, `drops` (named reasons).
"""

from __future__ import annotations

import collections
import os

from sfu.wire import stun

Address = tuple

RTO_S = 0.5  # RFC 8489 §6.2.1: initial retransmission timeout, doubled at each retransmission
MAX_TRANSMISSIONS = 4  # requests per round: 0, 0.5, 1.5, 3.5 s (RFC 8489 suggests 7; an
# address that stays silent this long is not the client's)
ROUND_SPACING_S = 5.0  # after an unanswered round the address is not asked again for this long: a
# stream of forged checks makes the server send at most MAX_TRANSMISSIONS small requests per
# address per ~8.5 s (the round's 3.5 s, its last 4 s timeout, then this)
PRIORITY = (126 << 24) | (65535 << 8) | 255  # RFC 8445 §5.1.2.1: a host candidate, component 1


class ConsentRequests:
    """Verifies addresses with our own Binding requests. See the module docstring."""

    def __init__(self, local_ufrag: str, remote_ufrag: str, remote_pwd: str | None) -> None:
        self._local_ufrag = local_ufrag
        self._remote_ufrag = remote_ufrag
        self._remote_pwd = remote_pwd
        self._tie_breaker = int.from_bytes(os.urandom(8), "big")
        self._verified: set[Address] = set()
        self._new: list[Address] = []
        self._pending: dict[bytes, Address] = {}  # transaction id -> address asked
        self._round: tuple[Address, float, int] | None = None  # (address, next send, sent so far)
        self._quiet_until: dict[Address, float] = {}  # unanswered addresses: no new round before
        self._out: list[tuple[bytes, Address]] = []
        self.drops: collections.Counter[str] = collections.Counter()

    def set_credentials(self, local_ufrag: str, remote_ufrag: str, remote_pwd: str | None) -> None:
        """ICE restart: later requests use the new credentials (answers to earlier ones still count)."""
        self._local_ufrag, self._remote_ufrag, self._remote_pwd = local_ufrag, remote_ufrag, remote_pwd

    def is_verified(self, addr: Address) -> bool:
        return addr in self._verified

    def mark_verified(self, addr: Address) -> None:
        if addr not in self._verified:
            self._verified.add(addr)
            self._new.append(addr)
        if self._round is not None and self._round[0] == addr:
            self._round = None

    def forget(self, addr: Address) -> None:
        """The address's consent lapsed: it must prove itself again before media goes there."""
        self._verified.discard(addr)

    def verify(self, addr: Address, now: float) -> None:
        """Start a round of requests to `addr` unless it is verified, already being asked, or was
        asked less than ROUND_SPACING_S ago. A new address replaces the one being asked."""
        if addr in self._verified or (self._round is not None and self._round[0] == addr):
            return
        if now < self._quiet_until.get(addr, 0.0):
            self.drops["consent-round-spaced"] += 1
            return
        if self._remote_pwd is None:
            self.drops["consent-no-remote-password"] += 1
            return
        self._round = (addr, now, 0)
        self.handle_timer(now)

    def handle_timer(self, now: float) -> None:
        if self._round is None:
            return
        addr, when, sent = self._round
        if now < when:
            return
        if sent >= MAX_TRANSMISSIONS:
            self.drops["consent-unanswered"] += 1
            self._round = None
            if len(self._quiet_until) >= 64:  # bounded: forget the oldest
                self._quiet_until.pop(next(iter(self._quiet_until)))
            self._quiet_until[addr] = now + ROUND_SPACING_S
            return
        assert self._remote_pwd is not None
        tid, data = stun.binding_request(
            f"{self._remote_ufrag}:{self._local_ufrag}", self._remote_pwd,
            priority=PRIORITY, controlling=False, tie_breaker=self._tie_breaker,
        )
        if len(self._pending) >= 4 * MAX_TRANSMISSIONS:  # bounded: forget the oldest
            self._pending.pop(next(iter(self._pending)))
        self._pending[tid] = addr
        self._out.append((data, addr))
        self._round = (addr, now + RTO_S * (2**sent), sent + 1)

    def receive_response(self, data: bytes, addr: Address, now: float) -> bool:
        """A STUN message that is not a request, from `addr`. True if it verified `addr`."""
        try:
            message = stun.parse_response(data)
        except stun.StunError:
            self.drops["consent-malformed"] += 1
            return False
        asked = self._pending.get(message.transaction_id)
        if asked is None or asked != addr:
            self.drops["consent-unexpected-response"] += 1
            return False
        if self._remote_pwd is None or not message.check_message_integrity(self._remote_pwd.encode()):
            self.drops["consent-bad-integrity"] += 1
            return False
        del self._pending[message.transaction_id]
        if message.message_class != stun._stun.Class.RESPONSE:
            self.drops["consent-error-response"] += 1
            return False
        self.mark_verified(addr)
        return True

    def next_deadline(self) -> float | None:
        return self._round[1] if self._round is not None else None

    def take_datagrams(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def take_verified(self) -> list[Address]:
        out, self._new = self._new, []
        return out
