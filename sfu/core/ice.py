"""ICE-lite responder for one peer (RFC 8445 §2.5, §7.3) with consent freshness (RFC 7675).

Inputs: receive_binding(datagram, addr, now), handle_timer(now), restart(...).
Outputs: the response bytes returned by receive_binding, take_events() (PathSelected,
ConsentExpired), `selected`, next_deadline(). `drops` counts ignored requests by reason.

Path rules. Browsers keep checking every candidate pair (~every 0.5 s), so a check's
source address alone never moves the media path:
- before any nomination, the first address with a valid check becomes `selected`;
- a valid check with USE-CANDIDATE moves `selected` to its address: the only way to move
  it while the current path is alive;
- when the selected address has had no valid check for `consent_timeout`, move to the most
  recently validated other address that is still alive; if none is alive, ConsentExpired.
- no valid check at all within `connect_timeout` of creation: ConsentExpired.
We are ICE-lite, hence always controlled: a peer claiming ICE-CONTROLLED gets 487.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from sfu.wire import stun

CONNECT_TIMEOUT_S = 20.0  # no valid check at all since creation: the client never came
CONSENT_TIMEOUT_S = 20.0  # RFC 7675 §5.1: consent expires 30 s after the last response at
# the latest; browsers check every ~0.5-2.5 s, so 20 s of silence means gone

MAX_ADDRESSES = 16  # remote addresses alive at once per peer: a browser checks from a handful;
# an attacker with its own session's credentials, from every source port it has (or can spoof),
# would otherwise grow this peer's tables, and the router's, without bound (docs/security.md)

Address = tuple  # (host, port) or asyncio's IPv6 4-tuple


@dataclass(frozen=True)
class PathSelected:
    addr: Address


@dataclass(frozen=True)
class ConsentExpired:
    reason: str


IceEvent = PathSelected | ConsentExpired


@dataclass(frozen=True)
class _Credentials:
    local_ufrag: str
    local_pwd: str
    remote_ufrag: str
    remote_pwd: str | None

    @property
    def username(self) -> bytes:
        return f"{self.local_ufrag}:{self.remote_ufrag}".encode()


class IceLite:
    """ICE-lite, controlled, for one peer. See the module docstring for the path rules."""

    def __init__(
        self,
        local_ufrag: str,
        local_pwd: str,
        remote_ufrag: str,
        remote_pwd: str | None,
        now: float,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        consent_timeout: float = CONSENT_TIMEOUT_S,
    ) -> None:
        self._creds = _Credentials(local_ufrag, local_pwd, remote_ufrag, remote_pwd)
        self._previous: _Credentials | None = None  # accepted until the new ones are used
        self.connect_timeout = connect_timeout
        self.consent_timeout = consent_timeout
        self.selected: Address | None = None
        self.nominated = False
        self.expired = False
        self.drops: collections.Counter[str] = collections.Counter()
        self._created = now
        self._last_valid: dict[Address, float] = {}
        self._events: list[IceEvent] = []

    @property
    def local_ufrag(self) -> str:
        return self._creds.local_ufrag

    @property
    def local_pwd(self) -> str:
        return self._creds.local_pwd

    # --- inputs ---------------------------------------------------------------------------

    def receive_binding(self, data: bytes, addr: Address, now: float) -> bytes | None:
        """Validate a Binding request; return the response to send back to `addr`, or None
        when the request is dropped (reason counted in `drops`)."""
        if self.expired:
            self.drops["expired"] += 1
            return None
        username = stun.peek_username(data)
        if username is None:
            self.drops["not-stun" if not stun.is_stun(data) else "no-username"] += 1
            return None
        if username == self._creds.username:
            creds = self._creds
        elif self._previous is not None and username == self._previous.username:
            creds = self._previous
        else:
            self.drops["bad-username"] += 1
            return None
        try:
            request = stun.parse_binding_request(data, creds.local_pwd)
        except stun.StunError as exc:
            self.drops[exc.reason] += 1
            return None
        if request.ice_controlled:
            # RFC 8445 §7.3.1.1: both sides controlled; a lite agent cannot take control
            self.drops["role-conflict"] += 1
            return stun.binding_error(request, stun.ROLE_CONFLICT, "Role Conflict", creds.local_pwd)
        if addr not in self._last_valid and len(self._last_valid) >= MAX_ADDRESSES:
            self.drops["too-many-addresses"] += 1  # until one of them lapses (consent_timeout)
            return None
        if creds is self._creds:
            self._previous = None
        self._last_valid[addr] = now
        if request.use_candidate:
            self.nominated = True
            self._select(addr)
        elif self.selected is None:
            self._select(addr)
        return stun.binding_success(request, (addr[0], addr[1]), creds.local_pwd)

    def handle_timer(self, now: float) -> None:
        if self.expired:
            return
        if self.selected is None:
            if now >= self._created + self.connect_timeout:
                self._expire("ice connect timeout")
            return
        alive = {a: t for a, t in self._last_valid.items() if now < t + self.consent_timeout}
        if self.selected not in alive:
            if not alive:
                self._expire("consent timeout")
                return
            self._select(max(alive, key=lambda a: alive[a]))
        self._last_valid = alive  # forget addresses whose consent has lapsed

    def restart(
        self,
        local_ufrag: str,
        local_pwd: str,
        remote_ufrag: str,
        remote_pwd: str | None,
        now: float,
    ) -> None:
        """ICE restart (RFC 8445 §9): new credentials; the current path stays until the
        peer nominates a new one. Checks with the old credentials are still answered until
        the first valid check with the new ones."""
        self._previous = self._creds
        self._creds = _Credentials(local_ufrag, local_pwd, remote_ufrag, remote_pwd)
        self.nominated = False

    def media_alive(self, addr: Address, now: float) -> None:
        """Authenticated SRTP/SRTCP arrived on the media path `addr` since the last call: that
        path is alive (consent is per path, RFC 7675 §5.1, never per session).

        RFC 7675 consent is the sender's duty; as an ICE-lite responder we only infer liveness.
        Some agents (libnice as GStreamer 1.22 configures it) keep a path alive with STUN
        indications, which carry no integrity, rather than requests; media that passed SRTP
        authentication is at least as strong a proof that the peer is there.
        """
        if not self.expired and addr in self._last_valid:
            self._last_valid[addr] = now

    # --- outputs --------------------------------------------------------------------------

    def address_is_known(self, addr: Address) -> bool:
        """True for addresses that passed a valid check whose consent has not lapsed: DTLS,
        RTP and RTCP are accepted from them."""
        return addr in self._last_valid

    def next_deadline(self) -> float | None:
        if self.expired:
            return None
        if self.selected is None:
            return self._created + self.connect_timeout
        return min(self._last_valid.values()) + self.consent_timeout

    def take_events(self) -> list[IceEvent]:
        out, self._events = self._events, []
        return out

    # --- internals ------------------------------------------------------------------------

    def _select(self, addr: Address) -> None:
        if addr != self.selected:
            self.selected = addr
            self._events.append(PathSelected(addr))

    def _expire(self, reason: str) -> None:
        self.expired = True
        self.selected = None
        self._last_valid.clear()
        self._events.append(ConsentExpired(reason))
