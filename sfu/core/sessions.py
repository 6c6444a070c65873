"""The session manager: WHIP/WHEP sessions, their peers, streams and the RTCP each leg gets.

Inputs: the signalling calls of `sfu.core.session_api.SessionApi` (publish, admit_viewer + view,
delete, patch), `handle_datagram(kind, endpoint, data, addr, now)` for what the fast path hands over
(STUN, DTLS, SRTCP, RTP with an unbound SSRC), and `handle_timer(now)`. Outputs: `take_datagrams()`
(what to send, already protected where needed), `next_deadline()`, and the name of each stream that
goes live, told to the live listeners (`add_live_listener`). It never touches a socket, a clock or
an event loop: the asyncio shells pass `now` and do the sending (`sfu.io.udp`) and hold WHEP
requests open while they wait for a publisher (`sfu.io.live_wait`).

The server ends every RTP/RTCP leg (DESIGN.md): towards publishers it is the receiver (its own
receiver reports, keyframe requests), towards viewers the sender (its own sender reports with the
viewer's SSRC and translated timestamps). Components it owns and drives: `RtcpLegs` (RTCP in and
reports out, core/rtcp_legs.py), `SimulcastControl` (layers, estimates, the overload guard),
`Repair` (NACK/RTX, keyframe cache).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from collections.abc import Callable

from .. import _fastpath
from ..errors import Conflict, NotFound, Overloaded, PreconditionFailed, Unprocessable
from .session_api import Created, Patched
from ..wire import rtcp
from ..wire.sdp import parse_sdpfrag
from ..wire.stun import is_binding_request, peek_username
from .admission import RETRY_AFTER_S as UNCONNECTED_RETRY_AFTER_S, UnconnectedSessions
from .certificate import CertificateStore
from . import events as ev
from .negotiation import LocalTransport, answer_publish, answer_subscribe
from .peer import AddressForgotten, AddressValidated, Closed, Connected, PathChanged, Peer, new_ice_credentials
from .repair import Repair
from .rtcp_legs import RtcpLegs
from .quality import Quality
from .simulcast import SimulcastControl
from .stream import TWCC_URI, Layer, Stream, Track
from .subscription import Subscription

log = logging.getLogger("sfu.sessions")

REPORT_INTERVAL_S = 1.0  # RFC 3550 §6.2 allows less than 5 s; WebRTC stacks use about 1 s
TICK_S = 0.05  # keyframe-request and gate polling granularity
NOT_LIVE_RETRY_AFTER_S = 2  # Retry-After on 409 for a stream that is not live
OVERLOAD_RETRY_AFTER_S = 5


def public_id(session_id: str) -> str:
    """The name a session goes by in stats and logs. The session id itself is the capability
    that controls the session (its resource URL: PATCH, DELETE, the layer endpoint), known only
    to the client that created it; this one-way derivation lets that client find itself in
    `/api/stats` without letting anyone who reads the stats take the session over."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:16]


@dataclass(eq=False)
class Session:
    """A WHIP or WHEP session: its peer and resource state. `id` is secret (see `public_id`)."""

    id: str
    kind: str  # "whip" | "whep"
    stream: Stream
    peer: Peer
    participant: str | None
    etag: str
    rtcp_ssrc: int
    mids: list[str]
    subscriptions: list[Subscription] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    rtcp_in: Counter = field(default_factory=Counter)
    closed: bool = False
    handle: str = ""  # public_id(id), for stats and logs

    def __post_init__(self) -> None:
        self.handle = public_id(self.id)


def _no_media_poll() -> None:
    """The default `SessionManager.media_poll`: no shell, nothing to forward."""


class SessionManager:
    """Implements `SessionApi` over sans-IO peers, streams and the fast-path router."""

    def __init__(
        self,
        config,
        router: _fastpath.Router,
        candidate_addresses: list[str],
        udp_port: int,
        certificates: CertificateStore,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.router = router
        self.candidate_addresses = candidate_addresses
        self.udp_port = udp_port
        self.certificates = certificates
        self.clock = clock
        self.wall_clock = wall_clock
        self.streams: dict[str, Stream] = {}
        self.sessions: dict[str, Session] = {}
        self.by_ufrag: dict[str, Session] = {}
        self.counters: Counter[str] = Counter()
        self._out: list[tuple[bytes, tuple]] = []
        self._timers: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._next_report = 0.0
        self._next_tick = 0.0
        self._requesting: set[int] = set()
        self._layers_requesting: dict[int, tuple[Session, Layer]] = {}
        self.simulcast = SimulcastControl(self)  # layer meters, publisher feedback, viewer layer choice
        self._live_listeners: list[Callable[[str], None]] = []
        self.events = ev.EventOutbox()  # lifecycle events for the shell (webhooks): take_events()
        self.quality = Quality(self)  # join times, loss, RTT, jitter, freezes (core/quality.py)
        self.repair = Repair(self)  # NACK/RTX on both legs, keyframe cache (core/repair.py)
        self.rtcp = RtcpLegs(self)  # RTCP from both legs, and our reports on them (core/rtcp_legs.py)
        # WHEP sessions with no ICE check yet: bounded per source and in total, freed when stale
        self.admission = UnconnectedSessions(getattr(config, "max_unconnected_per_source", 0),
                                             getattr(config, "max_unconnected", 0),
                                             getattr(config, "unconnected_timeout_s", 10.0))
        self.on_wakeup: Callable[[], None] | None = None
        # called between sessions in the timer sweeps: the shell forwards waiting media there
        # (sfu.io.udp.MediaPort.poll_media), so a sweep over many sessions never holds media back
        self.media_poll: Callable[[], None] = _no_media_poll

    # ------------------------------------------------------------------------------------------
    # Signalling (SessionApi)
    # ------------------------------------------------------------------------------------------

    def _local_transport(self, ufrag: str, pwd: str) -> LocalTransport:
        cert = self.certificates.current(self.wall_clock())
        return LocalTransport(ufrag, pwd, ("sha-256", cert.fingerprint_sha256()), self.candidates())

    def candidates(self) -> list[str]:
        """Host candidates (RFC 8839 §5.1), one per advertised address, all on the one UDP port."""
        lines = []
        for index, address in enumerate(self.candidate_addresses):
            priority = (126 << 24) | ((65535 - index) << 8) | 255  # RFC 8445 §5.1.2.1, component 1
            lines.append(f"{index + 1} 1 udp {priority} {address} {self.udp_port} typ host")
        return lines

    def _check_limits(self, stream: Stream | None) -> None:
        limit = self.config.max_sessions
        if limit and len(self.sessions) >= limit:
            self.counters["rejected-session-limit"] += 1
            raise Overloaded(f"session limit of {limit} reached", retry_after=OVERLOAD_RETRY_AFTER_S)
        per_stream = self.config.max_viewers_per_stream
        if stream is not None and per_stream and len(stream.viewers) >= per_stream:
            self.counters["rejected-viewer-limit"] += 1
            raise Overloaded(f"viewer limit of {per_stream} reached for this stream", retry_after=OVERLOAD_RETRY_AFTER_S)

    async def publish(self, stream: str, offer_sdp: str, participant: str | None) -> Created:
        self._check_limits(None)
        now = self.clock()
        session_id = secrets.token_urlsafe(12)
        ufrag_pwd = self._fresh_credentials()
        answer = answer_publish(offer_sdp, self._local_transport(*ufrag_pwd))
        if not answer.tracks:
            raise Unprocessable("the offer has no audio or video to publish")
        peer = self._new_peer_with(session_id, answer.remote, now, *ufrag_pwd)
        st = self.streams.get(stream) or self.streams.setdefault(stream, Stream(stream))
        if st.publisher is not None:
            old = st.publisher
            log.info("stream %s: new publisher replaces session %s", stream, old.handle)
            self.counters["publisher-replaced"] += 1
            self._close_session(old, "replaced by a new publisher", now)
        session = Session(
            session_id, "whip", st, peer, participant, secrets.token_hex(8), secrets.randbits(32),
            [t.mid for t in answer.tracks],
        )
        st.set_publisher(session, answer.tracks)
        self._register(session, now)
        self.events.emit(ev.StreamStarted(now, stream))
        for track in st.tracks:
            twcc = track.spec.extensions.get("http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01")
            if twcc:
                peer.endpoint.set_transport_cc(twcc)
        self.simulcast.add_publisher(
            session,
            next((t.spec.extensions[TWCC_URI] for t in st.tracks if TWCC_URI in t.spec.extensions), None),
            any("goog-remb" in t.spec.codec.rtcp_fb for t in st.tracks),
        )
        # viewers waiting on this name are re-pointed at the new tracks as layers appear
        for viewer in list(st.viewers):
            for sub in viewer.subscriptions:
                sub.detach()
        for listener in list(self._live_listeners):  # WHEP requests waiting for this publisher
            listener(stream)
        self.counters["publish-sessions"] += 1
        log.info("publish %s session %s: %s", stream, session.handle,
                 ", ".join(f"{t.kind}/{t.codec.name}{'/' + ','.join(t.rids) if t.rids else ''}" for t in answer.tracks),
                 extra={"stream": stream, "session": session.handle})
        return Created(session_id, answer.sdp, session.etag)

    def add_live_listener(self, listener: Callable[[str], None]) -> None:
        """`listener(stream)` is called with a stream's name each time a publisher makes it live (the
        HTTP shell releases the WHEP requests waiting for that stream)."""
        self._live_listeners.append(listener)

    def admit_viewer(self, stream: str) -> float | None:
        """A WHEP POST's first step: Overloaded at a session or viewer limit; for a stream that is
        not live, Conflict (409 + Retry-After, counted) unless `config.whep_wait_for_publisher` is
        set. Returns None when the stream is live, else how long (s) the request may wait for a
        publisher: the shell holds it until a live listener hears the stream's name and then calls
        `view`, or at the deadline raises `live_wait_expired(stream)`. Limits are not checked again
        after the wait."""
        st = self.streams.get(stream)
        self._check_limits(st)
        if st is not None and st.live:
            return None
        if not self.config.whep_wait_for_publisher:
            self.counters["rejected-not-live"] += 1
            raise Conflict(f"stream {stream!r} is not live", retry_after=NOT_LIVE_RETRY_AFTER_S)
        return self.config.whep_wait_timeout

    def live_wait_expired(self, stream: str) -> Conflict:
        """The error for a WHEP request that waited `admit_viewer`'s time and no publisher came."""
        self.counters["rejected-not-live"] += 1
        return Conflict(f"stream {stream!r} did not go live in time", retry_after=NOT_LIVE_RETRY_AFTER_S)

    async def view(self, stream: str, offer_sdp: str, participant: str | None, options: Mapping[str, str],
                   *, source: str | None = None) -> Created:
        """A WHEP POST's second step, after `admit_viewer` (and the wait it asked for): the viewer
        session. Conflict if the stream is not live (its publisher left before a waiting request
        resumed); Overloaded at the bound on unconnected sessions from `source` (the client's
        address) or in total (core/admission.py)."""
        st = self.streams.get(stream)
        if st is None or not st.live:
            raise Conflict(f"stream {stream!r} is not live", retry_after=NOT_LIVE_RETRY_AFTER_S)
        now = self.clock()
        client = source  # (`source` is reused below for the stream's tracks)
        if (refused := self.admission.refusal(client, now)) is not None:
            self.counters[f"rejected-{refused}"] += 1
            raise Overloaded(f"too many sessions waiting to connect ({refused})", retry_after=UNCONNECTED_RETRY_AFTER_S)
        session_id = secrets.token_urlsafe(12)
        ufrag_pwd = self._fresh_credentials()
        specs = [t.spec for t in st.tracks]
        answer = answer_subscribe(
            offer_sdp, self._local_transport(*ufrag_pwd), specs, lambda: secrets.randbits(32) or 1,
            f"sfu-{stream}",
        )
        peer = self._new_peer_with(session_id, answer.remote, now, *ufrag_pwd)
        session = Session(
            session_id, "whep", st, peer, participant, secrets.token_hex(8), secrets.randbits(32),
            [t.mid for t in answer.tracks], options=dict(options),
        )
        for spec in answer.tracks:
            source = st.tracks[spec.source_index]
            session.subscriptions.append(
                Subscription(peer.endpoint, spec, source.kind, source.spec.codec.clock_rate)
            )
        self.simulcast.add_viewer(session, options, now)  # raises BadRequest on a bad layer option
        st.viewers.add(session)
        self.events.emit(ev.ViewerJoined(now, stream, session.handle))
        self.quality.viewer_created(session, now)
        self.repair.on_viewer_created(session)
        self._register(session, now)
        self.admission.opened(session_id, client, now)
        self._attach_viewer(session)
        self.counters["view-sessions"] += 1
        return Created(session_id, answer.sdp, session.etag)

    def _fresh_credentials(self) -> tuple[str, str]:
        ufrag, pwd = new_ice_credentials()
        while ufrag in self.by_ufrag:
            ufrag, pwd = new_ice_credentials()
        return ufrag, pwd

    def _new_peer_with(self, session_id: str, remote, now: float, ufrag: str, pwd: str) -> Peer:
        cert = self.certificates.current(self.wall_clock())
        return Peer(session_id, cert, remote.ice_ufrag, remote.ice_pwd, list(remote.fingerprints), now, ufrag, pwd)

    def _register(self, session: Session, now: float) -> None:
        self.sessions[session.id] = session
        self.by_ufrag[session.peer.local_ufrag] = session
        session.peer.endpoint.owner = session
        self._schedule(session, now)
        self._wake()

    async def delete(self, kind: str, stream: str, session_id: str) -> bool:
        session = self.sessions.get(session_id)
        if session is None or session.kind != kind or session.stream.name != stream:
            return False
        self._close_session(session, "deleted by the client", self.clock())
        self._wake()
        return True

    def session_exists(self, kind: str, stream: str, session_id: str) -> bool:
        session = self.sessions.get(session_id)
        return session is not None and session.kind == kind and session.stream.name == stream

    async def patch(self, kind: str, stream: str, session_id: str, fragment: str, if_match: str | None) -> Patched:
        session = self.sessions.get(session_id)
        if session is None or session.kind != kind or session.stream.name != stream:
            raise NotFound("no such session")
        if if_match is not None and if_match != "*" and if_match != session.etag:
            raise PreconditionFailed("If-Match does not match the session's ETag")
        frag = parse_sdpfrag(fragment)
        ufrag, pwd = frag.credentials()
        if ufrag is None or ufrag == session.peer.remote_ufrag:
            # Trickle (RFC 8840): an ICE-lite server learns addresses from checks; nothing to do.
            self.counters["trickle-patches"] += 1
            return Patched(session.etag, None)
        if pwd is None:
            raise Unprocessable("an ICE restart needs both ice-ufrag and ice-pwd")
        now = self.clock()
        del self.by_ufrag[session.peer.local_ufrag]
        local_ufrag, local_pwd = session.peer.restart_ice(ufrag, pwd, now)
        self.by_ufrag[local_ufrag] = session
        session.etag = secrets.token_hex(8)
        self.counters["ice-restarts"] += 1
        mid = session.mids[0] if session.mids else "0"
        lines = [
            "a=ice-lite",
            f"a=ice-ufrag:{local_ufrag}",
            f"a=ice-pwd:{local_pwd}",
            f"a=group:BUNDLE {' '.join(session.mids)}",
            "m=audio 9 UDP/TLS/RTP/SAVPF 0",
            f"a=mid:{mid}",
        ]
        lines += [f"a=candidate:{c}" for c in self.candidates()]
        lines.append("a=end-of-candidates")
        self._schedule(session, now)
        return Patched(session.etag, "\r\n".join(lines) + "\r\n")

    async def set_layer(self, stream: str, session_id: str, request: Mapping[str, object]) -> dict[str, object]:
        """A viewer's manual layer limit, changed during the session (POST .../layer)."""
        session = self.sessions.get(session_id)
        if session is None or session.kind != "whep" or session.stream.name != stream:
            raise NotFound("no such session")
        result = self.simulcast.set_limit(session, request, self.clock())
        self._wake()
        return result

    def stats(self) -> dict[str, object]:
        now = self.clock()
        streams = {}
        for name, st in self.streams.items():
            streams[name] = {
                "live": st.live,
                "publisher": st.publisher.handle if st.publisher else None,
                "viewers": len(st.viewers),
                "tracks": [
                    {
                        "mid": t.spec.mid,
                        "kind": t.kind,
                        "codec": t.spec.codec.name,
                        "rids": list(t.spec.rids),
                        "layers": [
                            {
                                "rid": layer.rid,
                                "ssrc": layer.ssrc,
                                "packets": layer.stream.packets,
                                "expected": layer.stream.expected,  # RFC 3550 A.3: loss = expected - packets
                                "bytes": layer.stream.bytes,
                                "keyframes": layer.stream.keyframes,
                                "padding": layer.stream.padding,
                                "keyframe_requests_sent": layer.keyframes.sent,
                                "keyframe_requests_suppressed": layer.keyframes.suppressed,
                                "last_packet_age_s": round(now - layer.stream.last_packet_at, 3) if layer.stream.started else None,
                                "repair": self.repair.layer_stats(layer),
                                "loss": self.quality.layer_loss(layer),  # fraction, last report interval
                                **self.simulcast.layer_stats(t, layer),
                            }
                            for layer in t.layers
                        ],
                    }
                    for t in st.tracks
                ],
            }
        sessions = {
            s.handle: {
                "kind": s.kind,
                "stream": s.stream.name,
                "connected": s.peer.connected_at is not None,
                "srtp_profile": s.peer.srtp_profile,
                "path": list(s.peer.path) if s.peer.path else None,
                "rx_packets": s.peer.endpoint.rx_packets,
                "tx_packets": s.peer.endpoint.tx_packets,
                "srtp_auth_failures": s.peer.endpoint.srtp_auth_failures,
                "rtcp_in": dict(s.rtcp_in),
                "subscriptions": [sub.stats() for sub in s.subscriptions],
                "repair": [self.repair.subscription_stats(sub) for sub in s.subscriptions],
                "drops": dict(s.peer.drops),
                "video_layer": self.simulcast.stats_for(s),
                "quality": self.quality.viewer_stats(s),
            }
            for s in self.sessions.values()
        }
        return {
            "streams": streams,
            "sessions": sessions,
            "counters": dict(self.counters),
            "repair": self.repair_totals(),
            "router": {
                "datagrams_in": self.router.datagrams_in,
                "datagrams_out": self.router.datagrams_out,
                "forwarded": self.router.forwarded,
                "send_calls": self.router.send_calls,
                "gso": self.router.gso,
                "gso_sends": self.router.gso_sends,
                "gso_segments": self.router.gso_segments,
                "gso_failures": self.router.gso_failures,
                "wakeups": self.router.wakeups,
                "drops": self.router.drop_counts,
            },
            "overload": self.simulcast.overload.stats(),
        }

    def repair_totals(self) -> dict[str, int]:
        """Loss-repair and keyframe counters over the whole server (also exported as metrics)."""
        totals = self.repair.totals()
        layers = [layer for st in self.streams.values() for t in st.tracks for layer in t.layers]
        totals["keyframe_requests_received"] = self.counters["keyframe-requests-received"]
        totals["keyframe_requests_sent"] = self.counters["keyframe-requests-sent"]
        totals["keyframe_requests_suppressed"] = sum(layer.keyframes.suppressed for layer in layers)
        totals.setdefault("nacks_received", 0)
        totals.setdefault("nacks_sent", 0)
        totals.setdefault("retransmissions_served", 0)
        totals.setdefault("retransmissions_missed", 0)
        totals.setdefault("cache_hits", 0)
        return totals

    # ------------------------------------------------------------------------------------------
    # Datagrams from the fast path
    # ------------------------------------------------------------------------------------------

    def handle_datagram(self, kind: str, endpoint, data: bytes, addr, now: float) -> None:
        try:
            if kind == _fastpath.KIND_STUN:
                self._on_stun(endpoint, data, addr, now)
            elif kind == _fastpath.KIND_DTLS:
                self._on_dtls(endpoint, data, addr, now)
            elif kind == _fastpath.KIND_RTCP:
                self.rtcp.receive(endpoint, data, now)
            elif kind == _fastpath.KIND_RTP_UNBOUND:
                self._on_unbound_rtp(endpoint, data, now)
            elif kind == _fastpath.KIND_LOSS:
                self.repair.on_loss(now)
        except Exception:  # a bug must not take the server down; count and log it
            self.counters[f"errors-{kind}"] += 1
            log.exception("error handling a %s datagram", kind)

    def _on_stun(self, endpoint, data: bytes, addr, now: float) -> None:
        """A STUN message from the media port. A check names its session by USERNAME; only that
        session's ICE agent, after verifying MESSAGE-INTEGRITY with its password, may act on it.
        An address that belongs to one live session is never re-bound to another by a check
        from it: a forged check (right USERNAME, spoofed source) can neither take a publisher's
        address away nor aim a session's media at someone else (docs/security.md). A message
        without USERNAME from a session's validated address may answer our consent request."""
        holder = endpoint.owner if endpoint is not None else None
        username = peek_username(data)
        if username is None:
            if holder is not None and not holder.closed and not is_binding_request(data):
                holder.peer.receive_stun(data, addr, now)  # an answer to our consent request
                self._after_peer(holder, now)
                return
            self.counters["stun-dropped-no-username"] += 1
            return
        local_ufrag = username.split(b":", 1)[0].decode("ascii", "replace")
        target = self.by_ufrag.get(local_ufrag)
        if target is None:
            self.counters["stun-dropped-unknown-ufrag"] += 1
            return
        if holder is not None and holder is not target:
            self.counters["stun-dropped-address-of-another-session"] += 1
            return
        target.peer.receive_stun(data, addr, now)
        self._after_peer(target, now)

    def _on_dtls(self, endpoint, data: bytes, addr, now: float) -> None:
        session = endpoint.owner
        if session is None or session.closed:
            self.counters["dtls-dropped-no-session"] += 1
            return
        dropped = session.peer.receive_dtls(data, addr, now)
        if dropped is not None:  # junk from a known address (reasons: core/dtls.py)
            self.counters[f"dtls-dropped-{dropped}"] += 1
        self._after_peer(session, now)

    def _after_peer(self, session: Session, now: float) -> None:
        peer = session.peer
        for event in peer.take_events():
            if isinstance(event, AddressValidated):
                self.router.map_address(event.addr, peer.endpoint)
                self.admission.connected(session.id)
            elif isinstance(event, AddressForgotten):  # consent lapsed: its entry goes (bounded table)
                if self.router.endpoint_for(event.addr) is peer.endpoint:
                    self.router.unmap_address(event.addr)
            elif isinstance(event, PathChanged):
                self.router.set_path(peer.endpoint, event.addr)
                self.counters["path-changes" if event.addr is not None else "path-lapsed"] += 1
                if session.kind == "whep" and peer.connected_at is not None and event.addr is not None:
                    for sub in session.subscriptions:  # sendable now: start from the cache
                        if sub.layer is not None and sub.kind == "video" and sub.out.need_keyframe:
                            self.repair.schedule_start(session, sub, now)
            elif isinstance(event, Connected):
                self.counters["dtls-connected"] += 1
                if session.kind == "whip":
                    self.events.emit(ev.PublisherConnected(now, session.stream.name, session.handle))
                if session.kind == "whep":
                    for sub in session.subscriptions:
                        if sub.layer is not None and sub.kind == "video":
                            self.repair.schedule_start(session, sub, now)  # cache, else keyframe request
            elif isinstance(event, Closed):
                self._close_session(session, event.reason, now)
        self._out.extend(peer.take_datagrams())
        self._schedule(session, now)

    def _on_unbound_rtp(self, endpoint, data: bytes, now: float) -> None:
        session: Session = endpoint.owner
        if session is None or session.kind != "whip" or session.closed:
            self.counters["rtp-from-viewer-dropped"] += 1
            return
        st = session.stream
        bound = st.bound_stream(int.from_bytes(data[8:12], "big")) if len(data) >= 12 else None
        if bound is not None:
            # same batch as the packet that bound this SSRC: feed the stream (a keyframe burst)
            self.router.inject(bound, data, now)
            self.repair.on_loss(now)
            return
        placed = st.bind_packet(endpoint, data)
        if placed is None:
            self.counters["rtp-unknown-ssrc"] += 1
            return
        layer, instream = placed
        self.counters["ssrcs-bound"] += 1
        self.repair.on_bound(session, layer)
        self._attach_all(st)
        self.router.inject(instream, data, now)
        self.repair.on_loss(now)

    # ------------------------------------------------------------------------------------------
    # Attaching viewers to layers
    # ------------------------------------------------------------------------------------------

    def _attach_all(self, st: Stream) -> None:
        for viewer in st.viewers:
            self._attach_viewer(viewer)

    def _attach_viewer(self, session: Session) -> None:
        st = session.stream
        now = self.clock()
        for sub in session.subscriptions:
            if sub.source_index >= len(st.tracks):
                continue
            track = st.tracks[sub.source_index]
            if track.kind != sub.kind:
                continue
            layer = self._choose_layer(track, sub, session)
            if layer is None:
                continue
            if sub.layer is layer and sub.attached:
                continue
            sub.attach(track, layer)
            self.repair.on_attached(session, sub)
            if sub.kind == "video" and session.peer.connected_at is not None:
                if not self.repair.start_viewer(session, sub, now):  # keyframe cache miss
                    self._want_keyframe(st, layer, now)

    def _choose_layer(self, track: Track, sub: Subscription, session: Session) -> Layer | None:
        # ranked by measured size / bitrate under the viewer's limit and estimate (core/simulcast.py)
        return self.simulcast.choose_layer(track, sub, session)

    # ------------------------------------------------------------------------------------------
    # RTCP
    # ------------------------------------------------------------------------------------------

    def _want_keyframe(self, st: Stream, layer: Layer, now: float) -> None:
        publisher = st.publisher
        if publisher is None:
            return
        layer.keyframes.want(now)
        self._layers_requesting[id(layer)] = (publisher, layer)
        self._wake()

    def _send_keyframe_request(self, publisher: Session, layer: Layer) -> None:
        track = next((t for t in publisher.stream.tracks if layer in t.layers), None)
        use_fir = track is not None and "nack pli" not in track.spec.codec.rtcp_fb and "ccm fir" in track.spec.codec.rtcp_fb
        if use_fir:
            layer.fir_seq = (getattr(layer, "fir_seq", 0) + 1) & 0xFF
            request = rtcp.Fir(publisher.rtcp_ssrc, [(layer.ssrc, layer.fir_seq)])
        else:
            request = rtcp.Pli(publisher.rtcp_ssrc, layer.ssrc)
        self._send_rtcp(publisher, [rtcp.ReceiverReport(publisher.rtcp_ssrc, []), request])
        self.counters["keyframe-requests-sent"] += 1

    def _send_rtcp(self, session: Session, packets: list) -> None:
        peer = session.peer
        if peer.path is None or peer.srtp_profile is None or session.closed:
            return
        try:
            protected = peer.endpoint.protect_rtcp(rtcp.serialize(packets))
        except Exception:
            self.counters["rtcp-protect-failed"] += 1
            return
        self._out.append((protected, peer.path))

    # ------------------------------------------------------------------------------------------
    # Timers
    # ------------------------------------------------------------------------------------------

    def _schedule(self, session: Session, now: float) -> None:
        deadline = session.peer.next_deadline()
        if deadline is not None:
            heapq.heappush(self._timers, (deadline, next(self._seq), session.id))

    def next_deadline(self) -> float:
        deadline = self._next_tick if self._layers_requesting or self.simulcast.active else self._next_report
        deadline = min(deadline, self._next_report)
        if self._timers:
            deadline = min(deadline, self._timers[0][0])
        if (unconnected := self.admission.next_deadline()) is not None:
            deadline = min(deadline, unconnected)
        repair = self.repair.next_deadline()
        if repair is not None:
            deadline = min(deadline, repair)
        joining = self.quality.next_deadline()
        if joining is not None:
            deadline = min(deadline, joining)
        return deadline

    def handle_timer(self, now: float) -> None:
        for session_id in self.admission.expired(now):  # no ICE check in time: free it now
            if (stale := self.sessions.get(session_id)) is not None:
                self.counters["unconnected-expired"] += 1
                self._close_session(stale, f"no ICE check within {self.admission.timeout_s:g} s", now)
        while self._timers and self._timers[0][0] <= now:
            _, _, session_id = heapq.heappop(self._timers)
            session = self.sessions.get(session_id)
            if session is None or session.closed:
                continue
            deadline = session.peer.next_deadline()
            if deadline is None:
                continue
            if deadline <= now:
                session.peer.handle_timer(now)
                self._after_peer(session, now)  # re-schedules
                self.media_poll()
            else:
                heapq.heappush(self._timers, (deadline, next(self._seq), session_id))  # moved later
        self.repair.poll(now)  # NACKs towards publishers that are due
        self.quality.poll(now)  # viewers' first media packet / keyframe sent
        self.media_poll()
        if now >= self._next_tick:
            self._next_tick = now + TICK_S
            self._poll_keyframes(now)
            self.media_poll()
            self.simulcast.tick(now)
        if now >= self._next_report:
            self._next_report = now + REPORT_INTERVAL_S
            self.rtcp.send_reports(now)
            self.media_poll()
            self.quality.report_tick(now)
            self._poll_gates(now)
            self.media_poll()
            self.repair.update_rates(now)

    def _poll_gates(self, now: float) -> None:
        """Viewers gated on a keyframe that never came: ask again (the requester throttles)."""
        for st in self.streams.values():
            for viewer in st.viewers:
                if viewer.peer.srtp_profile is None:
                    continue
                for sub in viewer.subscriptions:
                    if sub.out.keyframe_wanted and sub.layer is not None:
                        self._want_keyframe(st, sub.layer, now)

    def _poll_keyframes(self, now: float) -> None:
        for key, (publisher, layer) in list(self._layers_requesting.items()):
            layer.poll_keyframe(now)
            if publisher.closed:
                del self._layers_requesting[key]
                continue
            if layer.keyframes.poll(now):
                self._send_keyframe_request(publisher, layer)
            if layer.keyframes.wanted_since is None:
                del self._layers_requesting[key]

    # ------------------------------------------------------------------------------------------
    # Teardown
    # ------------------------------------------------------------------------------------------

    def _close_session(self, session: Session, reason: str, now: float) -> None:
        if session.closed:
            return
        session.closed = True
        session.peer.close(reason, now)
        self._out.extend(session.peer.take_datagrams())
        for addr in session.peer.validated_addresses:
            if self.router.endpoint_for(addr) is session.peer.endpoint:
                self.router.unmap_address(addr)
        self.router.set_path(session.peer.endpoint, None)
        self.sessions.pop(session.id, None)
        self.admission.closed(session.id)
        if self.by_ufrag.get(session.peer.local_ufrag) is session:
            del self.by_ufrag[session.peer.local_ufrag]
        st = session.stream
        if session.kind == "whip":
            self.events.emit(ev.PublisherDisconnected(now, st.name, session.handle, reason))
            if st.clear_publisher(session):
                self.events.emit(ev.StreamEnded(now, st.name))
                for viewer in st.viewers:
                    for sub in viewer.subscriptions:
                        sub.detach()
            session.peer.endpoint.unbind_all()
        else:
            for sub in session.subscriptions:
                sub.detach()
                sub.out.owner = None  # the OutTrack <-> Subscription cycle (see Peer.close)
            st.viewers.discard(session)
            self.events.emit(ev.ViewerLeft(now, st.name, session.handle, reason))
        if st.publisher is None and not st.viewers:
            self.streams.pop(st.name, None)
        self.simulcast.remove(session)
        self.repair.forget(session)
        self.quality.forget(session)
        self.counters[f"closed-{session.kind}"] += 1
        log.info("%s session %s on %s closed: %s", session.kind, session.handle, st.name, reason,
                 extra={"stream": st.name, "session": session.handle})

    def close_all(self, reason: str) -> None:
        now = self.clock()
        for session in list(self.sessions.values()):
            self._close_session(session, reason, now)

    # ------------------------------------------------------------------------------------------
    # Admin (sfu/io/admin.py): sessions named by their public id, never by the secret one
    # ------------------------------------------------------------------------------------------

    def session_summary(self, session: Session) -> dict[str, object]:
        """What the admin API lists for a session (its `id` is the public one)."""
        return {
            "id": session.handle,
            "kind": session.kind,
            "stream": session.stream.name,
            "participant": session.participant,
            "connected": session.peer.connected_at is not None,
            "path": list(session.peer.path) if session.peer.path else None,
        }

    def session_by_public_id(self, handle: str) -> Session | None:
        return next((s for s in self.sessions.values() if s.handle == handle), None)

    def end_session(self, session: Session, reason: str) -> None:
        """Close one session (an admin action or a revoked token): its client sees DTLS close."""
        self._close_session(session, reason, self.clock())
        self._wake()

    def end_stream(self, name: str, reason: str) -> int:
        """Close a stream's publisher and viewers; the number of sessions closed (0: no such stream)."""
        st = self.streams.get(name)
        if st is None:
            return 0
        members = ([st.publisher] if st.publisher is not None else []) + list(st.viewers)
        now = self.clock()
        for session in members:
            self._close_session(session, reason, now)
        self._wake()
        return len(members)

    # ------------------------------------------------------------------------------------------
    # Outputs
    # ------------------------------------------------------------------------------------------

    def take_events(self) -> list[ev.Event]:
        """The lifecycle events since the last call, oldest first (`sfu.core.events`)."""
        return self.events.take()

    def take_datagrams(self) -> list[tuple[bytes, tuple]]:
        out, self._out = self._out, []
        return out

    def _wake(self) -> None:
        if self.on_wakeup is not None:
            self.on_wakeup()

