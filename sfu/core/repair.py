"""Loss repair and instant first frame, as the session manager drives them.

Towards publishers (the server is the receiver): the fast path records gaps per incoming stream
(`Router.take_loss_events`, `InStream.take_gaps`); a `NackGenerator` per layer turns them into
RFC 4585 §6.2.1 generic NACKs, retried about once per RTT; too much missing becomes a keyframe
request. Retransmissions come back as RTX (decapsulated in C) or as same-SSRC copies (OBS); the
received bitmap in C forwards each packet to viewers exactly once. RTT towards a publisher is
measured with RFC 3611 XR: each receiver report compound carries an RRTR block (§4.4), and a
publisher that answers with DLRR (§4.5; libwebrtc does) gives RTT = now - LRR - DLRR. Until then
(and for publishers that never answer) `nack.DEFAULT_RTT_S` (100 ms) is used.

Towards viewers (the server is the sender): a `Retransmitter` per subscription that negotiated
NACK sets the C policy; a viewer NACK is answered by one `Router.resend` call. What the store
lacks (the server never got it) becomes an upstream NACK when the publisher's stream still misses it.

Keyframe cache: per video layer, in C (`InStream.enable_keyframe_cache`); a viewer whose
subscription becomes sendable (DTLS connected with a path, or attached while connected) is started
from it (`Router.replay_cache`), and only a miss asks the publisher for a keyframe.

Inputs: the `on_*` calls below, `poll(now)` from the manager's timer. Outputs: RTCP through the
manager's `_send_rtcp`, keyframe wants through `_want_keyframe`, `next_deadline()`, `stats`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..wire import rtcp
from .nack import NackGenerator
from .retransmit import Retransmitter

if TYPE_CHECKING:
    from .sessions import Session, SessionManager
    from .stream import Layer, Track
    from .subscription import Subscription

VIEWER_LOSS_KEYFRAME = 64  # sequence numbers one viewer NACK asks for that nobody can resend
# After DTLS completes the server's last flight (ChangeCipherSpec + Finished) is still queued in
# the manager's output while the fast path could send at once: SRTP that overtakes it is dropped
# by the viewer ("not ready"). Start from the cache on the timer, just after the flight has left.
CACHE_START_DELAY_S = 0.005


@dataclass(eq=False)
class Incoming:
    """Repair state of one publisher layer."""

    session: Any  # the publisher's Session
    layer: Any  # its Layer
    stream: Any  # the layer's InStream when bound (held: the dict key is its id)
    nack: NackGenerator = field(default_factory=NackGenerator)
    enabled: bool = True  # the publisher negotiated "nack"


class Repair:
    """Loss repair glue between the session manager and the fast path."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.incoming: dict[int, Incoming] = {}  # id(InStream) of the layer's media stream
        self.viewers: dict[int, Retransmitter] = {}  # id(Subscription)
        self.counters: Counter[str] = Counter()
        self._starts: list[tuple[float, Any, Any]] = []  # (when, session, subscription)

    # -- registration ---------------------------------------------------------------------------

    def on_bound(self, session: Session, layer: Layer) -> None:
        """A publisher layer's stream exists (first packet bound): NACK state, keyframe cache."""
        key = id(layer.stream)
        known = self.incoming.get(key)
        if known is not None and known.stream is layer.stream:
            return
        track = next((t for t in session.stream.tracks if layer in t.layers), None)
        enabled = track is not None and "nack" in track.spec.codec.rtcp_fb
        self.incoming[key] = Incoming(session, layer, layer.stream, enabled=enabled)
        if track is not None and track.kind == "video" and getattr(self.manager.config, "keyframe_cache", True):
            layer.stream.enable_keyframe_cache(True)

    def on_viewer_created(self, session: Session) -> None:
        for sub in session.subscriptions:
            spec = sub.spec
            if spec.nack:
                self.viewers[id(sub)] = Retransmitter(sub.out, spec.rtx_ssrc, spec.rtx_payload_type)
            self._configure_red(session, sub)

    def on_attached(self, session: Session, sub: Subscription) -> None:
        self._configure_red(session, sub)

    def _configure_red(self, session: Session, sub: Subscription) -> None:
        if sub.kind != "audio":
            return
        tracks = session.stream.tracks
        if sub.source_index >= len(tracks):
            return
        codec = tracks[sub.source_index].spec.codec
        source_red = codec.red_payload_type if codec.red_payload_type is not None else -1
        viewer_red = sub.spec.red_payload_type if sub.spec.red_payload_type is not None else -1
        sub.out.set_red(source_red, viewer_red, codec.payload_type)

    def forget(self, session: Session) -> None:
        if session.kind == "whip":
            for key in [k for k, inc in self.incoming.items() if inc.session is session]:
                del self.incoming[key]
        else:
            for sub in session.subscriptions:
                self.viewers.pop(id(sub), None)

    # -- instant first frame ---------------------------------------------------------------------

    def schedule_start(self, session: Session, sub: Subscription, now: float) -> None:
        """The subscription just became sendable (DTLS up with a path): start it from the cache
        after `CACHE_START_DELAY_S`, or ask the publisher for a keyframe on a miss."""
        self._starts.append((now + CACHE_START_DELAY_S, session, sub))
        self.manager._wake()

    def start_viewer(self, session: Session, sub: Subscription, now: float) -> bool:
        """Start a sendable video subscription from its layer's keyframe cache. True when the viewer
        has its keyframe (replayed now, or already flowing); False: ask the publisher for one."""
        if sub.kind != "video" or sub.layer is None:
            return False
        if not sub.out.need_keyframe:
            return True
        if not getattr(self.manager.config, "keyframe_cache", True):
            return False
        sent = self.manager.router.replay_cache(sub.layer.stream, sub.out, now)
        if sent:
            self.counters["cache-hits"] += 1
            self.counters["cache-packets-replayed"] += sent
            return True
        self.counters["cache-misses"] += 1
        return False

    # -- towards publishers ----------------------------------------------------------------------

    def on_loss(self, now: float) -> None:
        """The fast path recorded gaps: hand them to each layer's NACK generator."""
        for stream in self.manager.router.take_loss_events():
            gaps, overflowed = stream.take_gaps()
            inc = self.incoming.get(id(stream))
            if inc is None:
                continue
            self.counters["gaps"] += len(gaps)
            if not inc.enabled:
                if overflowed:
                    self._publisher_keyframe(inc, now)
                continue
            inc.nack.on_gaps(gaps, overflowed, now, stream.last_keyframe_seq)
            if inc.nack.take_keyframe_needed():
                self._publisher_keyframe(inc, now)
        self.manager._wake()

    def on_publisher_xr(self, session: Session, packet: rtcp.ExtendedReport, now: float) -> None:
        """RFC 3611 §4.5 DLRR answering our RRTR: RTT = A - LRR - DLRR."""
        mid = rtcp.ntp_middle_32(rtcp.ntp_from_unix(self.manager.wall_clock()))
        for block in packet.blocks:
            if not isinstance(block, rtcp.Dlrr):
                continue
            for ssrc, lrr, dlrr in block.items:
                if ssrc != session.rtcp_ssrc:
                    continue
                rtt = rtcp.rtt_from_report(mid, lrr, dlrr)
                if rtt is None:
                    continue
                self.counters["publisher-rtt-samples"] += 1
                for inc in self.incoming.values():
                    if inc.session is session:
                        inc.nack.set_rtt(rtt)

    def report_extras(self, session: Session, ntp: int) -> list[rtcp.RtcpPacket]:
        """Blocks to add to a publisher's receiver report compound: XR RRTR (RFC 3611 §4.4)."""
        return [rtcp.ExtendedReport(session.rtcp_ssrc, [rtcp.Rrtr(ntp)])]

    def _publisher_keyframe(self, inc: Incoming, now: float) -> None:
        self.counters["keyframe-requests-for-loss"] += 1
        self.manager._want_keyframe(inc.session.stream, inc.layer, now)

    # -- towards viewers -------------------------------------------------------------------------

    def on_viewer_nack(self, session: Session, packet: rtcp.Nack, now: float) -> None:
        self.counters["nacks-received"] += 1
        self.counters["nack-seqs-received"] += len(packet.lost)
        for sub in session.subscriptions:
            if packet.media_ssrc not in (sub.spec.ssrc, sub.spec.rtx_ssrc):
                continue
            retransmitter = self.viewers.get(id(sub))
            if retransmitter is None:
                self.counters["nacks-not-negotiated"] += 1
                return
            before = sub.out.retransmissions
            missed = retransmitter.on_nack(self.manager.router, packet.lost, now)
            after = sub.out.retransmissions
            self.counters["retransmissions-served"] += after["sent"] - before["sent"]
            self.counters["retransmissions-missed"] += after["missing"] - before["missing"]
            if missed:
                self._upstream(session, sub, retransmitter, missed, now)
            return

    def _upstream(self, session: Session, sub: Subscription, retransmitter: Retransmitter,
                  missed: list[int], now: float) -> None:
        """Viewer seqs the store could not rebuild: NACK the publisher for those it still misses."""
        layer = sub.layer
        inc = self.incoming.get(id(layer.stream)) if layer is not None else None
        lost_for_good = 0
        asked = False
        for ext in missed:
            source = retransmitter.source_seq(ext)
            if inc is None or source is None or not inc.enabled:
                lost_for_good += 1
                continue
            state = layer.stream.packet_state(source)
            if state == 0:
                if inc.nack.request(source, now):
                    self.counters["upstream-nacks-for-viewers"] += 1
                    asked = True
            elif state == -1:
                lost_for_good += 1
        if asked:
            self.manager._wake()
        if lost_for_good >= VIEWER_LOSS_KEYFRAME and layer is not None:
            self.counters["keyframe-requests-for-viewer-loss"] += 1
            self.manager._want_keyframe(session.stream, layer, now)

    def on_viewer_report(self, sub: Subscription, block: rtcp.ReportBlock, now: float) -> None:
        retransmitter = self.viewers.get(id(sub))
        if retransmitter is None or not block.lsr:
            return
        mid = rtcp.ntp_middle_32(rtcp.ntp_from_unix(self.manager.wall_clock()))
        retransmitter.on_report(rtcp.rtt_from_report(mid, block.lsr, block.dlsr), now)

    # -- timers --------------------------------------------------------------------------------

    def poll(self, now: float) -> None:
        if self._starts:
            due = [item for item in self._starts if item[0] <= now]
            self._starts = [item for item in self._starts if item[0] > now]
            for _, session, sub in due:
                if session.closed or sub.layer is None:
                    continue
                if not self.start_viewer(session, sub, now):  # cache miss: ask the publisher
                    self.manager._want_keyframe(session.stream, sub.layer, now)
        for inc in list(self.incoming.values()):
            if not inc.nack.pending or inc.session.closed:
                continue
            deadline = inc.nack.next_deadline()
            if deadline is None or deadline > now:
                continue
            seqs = inc.nack.poll(now, inc.stream.missing)
            if seqs:
                ssrc = inc.session.rtcp_ssrc
                self.manager._send_rtcp(inc.session, [
                    rtcp.ReceiverReport(ssrc, []), rtcp.Nack(ssrc, inc.stream.ssrc, [s & 0xFFFF for s in seqs]),
                ])
                self.counters["nacks-sent"] += 1
                self.counters["nack-seqs-sent"] += len(seqs)

    def next_deadline(self) -> float | None:
        deadlines = [d for inc in self.incoming.values() if inc.nack.pending
                     for d in (inc.nack.next_deadline(),) if d is not None]
        deadlines += [item[0] for item in self._starts]
        return min(deadlines) if deadlines else None

    def update_rates(self, now: float) -> None:
        for retransmitter in self.viewers.values():
            retransmitter.update_rate(now)

    # -- stats ---------------------------------------------------------------------------------

    def layer_stats(self, layer: Layer) -> dict[str, object]:
        inc = self.incoming.get(id(layer.stream))
        out: dict[str, object] = dict(layer.stream.repair_counts)
        cache = layer.stream.keyframe_cache
        if cache is not None:
            out["cache_packets"], out["cache_bytes"], out["cache_age_s"], out["cache_valid"] = (
                cache[0], cache[1], round(cache[2], 3), cache[3])
            # sized by the stream's keyframe interval (_repair.pxi): memory held, interval, age bound
            memory, interval, max_age = layer.stream.keyframe_cache_sizing
            out["cache_memory_bytes"] = memory
            out["cache_interval_s"] = round(interval, 3) if interval is not None else None
            out["cache_max_age_s"] = round(max_age, 3)
        if inc is not None:
            g = inc.nack
            out.update(nacks_sent=g.nacks_sent, nack_seqs_sent=g.seqs_requested, recovered=g.recovered,
                       given_up=g.given_up, nack_pending=len(g.pending),
                       rtt_ms=round(g.rtt * 1000, 1) if g.rtt_measured else None)
        return out

    def subscription_stats(self, sub: Subscription) -> dict[str, object] | None:
        retransmitter = self.viewers.get(id(sub))
        return retransmitter.stats() if retransmitter is not None else None

    def totals(self, tracks: list[Track] | None = None) -> dict[str, int]:
        totals = {k.replace("-", "_"): v for k, v in self.counters.items()}
        duplicates = 0
        for inc in self.incoming.values():
            duplicates += inc.stream.repair_counts["duplicates"]
        totals["duplicates_dropped"] = duplicates
        return totals
