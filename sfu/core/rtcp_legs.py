"""RTCP on both legs: what publishers and viewers send the server, and the reports it sends them.

The server ends every RTP/RTCP leg (DESIGN.md): towards publishers it is the receiver, towards
viewers the sender. Driven by the `SessionManager` that owns it: `receive(endpoint, compound, now)`
for each SRTCP compound a peer sent (unprotected by the fast path; a viewer's transport-cc feedback
is summarised in C by the layer control first, `SimulcastControl.on_viewer_rtcp`), and
`send_reports(now)` once a second from the manager's timer. Outputs go through the manager:
`_send_rtcp` (protected and queued), `_want_keyframe` (merged, throttled requests to the
publisher), the repair component's hooks (NACKs, RTT), and its counters.

- From publishers: sender reports (kept per layer: timestamp alignment for switches and the
  viewers' sender reports), XR DLRR (RTT, RFC 3611).
- From viewers: PLI / FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1) become keyframe requests for the layer
  the viewer gets; generic NACKs (RFC 4585 §6.2.1) are served from the layer's store; receiver
  reports feed the RTT for resend pacing; REMB and receiver-report loss feed the estimate of a
  viewer that negotiated REMB without transport-cc (`SimulcastControl.on_viewer_remb`).
- Reports: a receiver report to each publisher with a block per incoming layer (RFC 3550 §6.4.2,
  A.3; 31 blocks per packet) plus XR RRTR, a sender report to each viewer per subscription with the
  timestamp translated through the subscription's offset (§6.4.1).
"""

from __future__ import annotations

from ..wire import rtcp
from .stream import Layer, SenderReportInfo
from .subscription import Subscription


class RtcpLegs:
    """RTCP in from both legs, and the server's reports out (see the module docstring)."""

    def __init__(self, manager) -> None:
        self.manager = manager

    def receive(self, endpoint, data: bytes, now: float) -> None:
        """One SRTCP compound from a peer, already unprotected by the fast path."""
        manager = self.manager
        session = endpoint.owner
        if session is None or session.closed:
            return
        if session.kind == "whep":
            # transport-cc feedback goes to C whole (parse, match, summarise); the rest is parsed here
            rest = manager.simulcast.on_viewer_rtcp(session, data, now)
            if rest is None:
                return
            data = rest
        try:
            packets = rtcp.parse_compound(data)
        except rtcp.RtcpError as exc:
            manager.counters["rtcp-malformed"] += 1
            session.rtcp_in[f"malformed-{exc}"] += 1
            return
        for packet in packets:
            name = type(packet).__name__
            session.rtcp_in[name] += 1
            if session.kind == "whip":
                self.from_publisher(session, packet, now)
            else:
                self.from_viewer(session, packet, now)

    def from_publisher(self, session, packet, now: float) -> None:
        if isinstance(packet, rtcp.SenderReport):
            for track in session.stream.tracks:
                layer = track.layer_for_ssrc(packet.ssrc)
                if layer is not None and layer.ssrc == packet.ssrc:
                    layer.last_sr = SenderReportInfo(packet.ntp_timestamp, packet.rtp_timestamp, now)
        elif isinstance(packet, rtcp.ExtendedReport):
            self.manager.repair.on_publisher_xr(session, packet, now)  # DLRR: RTT towards the publisher

    def from_viewer(self, session, packet, now: float) -> None:
        manager = self.manager
        if isinstance(packet, (rtcp.Pli, rtcp.Fir)):
            targets = [packet.media_ssrc] if isinstance(packet, rtcp.Pli) else [e[0] for e in packet.entries]
            manager.counters["keyframe-requests-received"] += 1
            for sub in session.subscriptions:
                if sub.spec.ssrc in targets and sub.layer is not None:
                    manager._want_keyframe(session.stream, sub.layer, now)
        elif isinstance(packet, rtcp.TransportCc):
            # only here when the C walk passed the compound on whole (more than 64 packets in it)
            manager.counters["twcc-feedback-unsummarised"] += 1
        elif isinstance(packet, rtcp.Nack):
            manager.counters["nacks-received"] += 1
            manager.repair.on_viewer_nack(session, packet, now)  # rebuilt from the layer's C store
        elif isinstance(packet, rtcp.ReceiverReport | rtcp.SenderReport):
            for block in packet.reports:
                for sub in session.subscriptions:
                    if sub.spec.ssrc == block.ssrc:
                        sub.last_report = block
                        manager.repair.on_viewer_report(sub, block, now)  # RTT for resend pacing
                        manager.simulcast.on_viewer_report(session, sub, block, now)  # REMB-only loss
        elif isinstance(packet, rtcp.Remb):
            manager.simulcast.on_viewer_remb(session, packet.bitrate, now)  # REMB-only estimate

    def send_reports(self, now: float) -> None:
        """Receiver reports to every publisher, sender reports to every viewer (once a second)."""
        manager = self.manager
        wall = manager.wall_clock()
        ntp = rtcp.ntp_from_unix(wall)
        for session in list(manager.sessions.values()):
            if session.closed or session.peer.srtp_profile is None:
                continue
            manager.media_poll()
            session.peer.poll_activity(now)
            if session.kind == "whip":
                blocks = []
                for track in session.stream.tracks:
                    for layer in track.layers:
                        blocks.append(self._report_block(layer, now))
                for i in range(0, len(blocks), 31) or [0]:
                    extras = manager.repair.report_extras(session, ntp) if i == 0 else []  # XR RRTR
                    manager._send_rtcp(session, [rtcp.ReceiverReport(session.rtcp_ssrc, blocks[i : i + 31]), *extras])
            else:
                packets = []
                for sub in session.subscriptions:
                    out = sub.out
                    if not out.has_out:
                        continue
                    packets.append(
                        rtcp.SenderReport(sub.spec.ssrc, ntp, self._translated_timestamp(sub, now, wall), out.packets & 0xFFFFFFFF, out.bytes & 0xFFFFFFFF, [])
                    )
                if packets:
                    manager._send_rtcp(session, packets)

    @staticmethod
    def _translated_timestamp(sub: Subscription, now: float, wall: float) -> int:
        """RTP timestamp for `now` on the viewer's clock (RFC 3550 §6.4.1), from the publisher's
        own sender report when it sent one (keeps its audio/video sync), else extrapolated."""
        layer = sub.layer
        if layer is not None and layer.last_sr is not None and sub.out.has_out:
            sr = layer.last_sr
            elapsed = (rtcp.ntp_from_unix(wall) - sr.ntp) / 2**32
            source_ts = sr.rtp_timestamp + int(elapsed * sub.out.clock_rate)
            return (source_ts + sub.out.ts_offset) & 0xFFFFFFFF
        return sub.out.out_timestamp_at(now)

    @staticmethod
    def _report_block(layer: Layer, now: float) -> rtcp.ReportBlock:
        """RFC 3550 §6.4.1 / A.3 report block for one incoming layer."""
        st = layer.stream
        expected = st.expected
        received = st.packets
        lost = max(0, expected - received)
        expected_interval = expected - layer.expected_prior
        received_interval = received - layer.received_prior
        layer.expected_prior, layer.received_prior = expected, received
        lost_interval = expected_interval - received_interval
        fraction = (lost_interval << 8) // expected_interval if expected_interval > 0 and lost_interval > 0 else 0
        lsr = dlsr = 0
        if layer.last_sr is not None:
            lsr = rtcp.ntp_middle_32(layer.last_sr.ntp)
            dlsr = int((now - layer.last_sr.received_at) * 65536) & 0xFFFFFFFF
        highest = (st.highest_seq - (1 << 32)) & 0xFFFFFFFF if st.started else 0
        return rtcp.ReportBlock(layer.ssrc, min(fraction, 255), min(lost, 0x7FFFFF), highest, int(st.jitter), lsr, dlsr)
