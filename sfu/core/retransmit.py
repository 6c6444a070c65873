"""Retransmissions towards one viewer's track (the server is the sender): the policy around the C store.

The packets live in C, once per incoming layer (`sfu/_resend.pxi`: each `InStream` keeps its source
packets; each `OutTrack` only how it rewrote them, per "epoch" between two re-bases), and one viewer
NACK is answered by one C call (`Router.resend`: lookup, rewrite again, RFC 4588 RTX wrap when
negotiated, protect, send). This object sets the knobs the C side applies per packet, from what the
viewer's RTCP says:

- not the same packet twice within an RTT (`min_interval`, from the viewer's receiver reports:
  RFC 3550 §6.4.1 LSR/DLSR of our sender reports);
- at most a share of the viewer's media bitrate (a token bucket: `RTX_RATE_SHARE` of the bitrate
  measured over the last report interval, never below `RTX_MIN_RATE_BPS`);
- never older than the last keyframe sent (C: `OutTrack.keyframe_floor`).

Inputs: `on_nack(lost, now)`, `on_report(rtt, now)`, `update_rate(now)` (once per report interval).
Output: the sequence numbers the store could not rebuild, as the viewer's extended numbers (the caller
maps them to the publisher's numbering and NACKs upstream when still useful).
"""

from __future__ import annotations

import secrets

from .. import _fastpath

RTX_RATE_SHARE = 0.3  # retransmissions may add this share of the viewer's media bitrate
RTX_MIN_RATE_BPS = 400_000  # ... but never less than this (a keyframe's worth of repairs)
RTX_BURST_S = 0.25  # bucket depth in seconds of the allowed rate
RTX_MIN_BURST_BYTES = 32_000  # ... and at least this (a burst loss of a few packets)
DEFAULT_VIEWER_RTT_S = 0.03  # until the first receiver report measures it
RESEND_GUARD = 0.8  # a repeat NACK sooner than this share of the RTT is a duplicate request
MIN_RESEND_INTERVAL_S = 0.005
MAX_RESEND_INTERVAL_S = 0.5


class Retransmitter:
    """Retransmission policy of one subscription; owns no packets (its layer's C store does)."""

    def __init__(self, out: _fastpath.OutTrack, rtx_ssrc: int | None, rtx_payload_type: int | None) -> None:
        self.out = out
        out.enable_retransmissions()
        self.rtx = rtx_ssrc is not None and rtx_payload_type is not None
        if self.rtx:
            out.set_rtx(rtx_ssrc, rtx_payload_type, secrets.randbits(15))
        self.rtt = DEFAULT_VIEWER_RTT_S
        self.rtt_measured = False
        self.nacks_received = 0
        self._bytes_at = 0
        self._rate_at: float | None = None
        self.rate_bps = RTX_MIN_RATE_BPS
        self._apply()

    def _apply(self) -> None:
        rate = max(RTX_MIN_RATE_BPS, self.rate_bps) / 8.0
        interval = min(max(self.rtt * RESEND_GUARD, MIN_RESEND_INTERVAL_S), MAX_RESEND_INTERVAL_S)
        self.out.set_retransmission_policy(rate, max(RTX_MIN_BURST_BYTES, rate * RTX_BURST_S), interval)
        if self.out.rtx_tokens == 0:
            self.out.rtx_tokens = self.out.rtx_burst

    def on_report(self, rtt: float | None, now: float) -> None:
        if rtt is None:
            return
        self.rtt = rtt
        self.rtt_measured = True
        self._apply()

    def update_rate(self, now: float) -> None:
        sent = self.out.bytes
        if self._rate_at is not None and now > self._rate_at:
            measured = (sent - self._bytes_at) * 8 / (now - self._rate_at)
            self.rate_bps = measured * RTX_RATE_SHARE
        self._bytes_at, self._rate_at = sent, now
        self._apply()

    def on_nack(self, router: _fastpath.Router, lost: list[int], now: float) -> list[int]:
        """Resend what the store has (one C call); return the viewer ext seqs it did not have."""
        self.nacks_received += 1
        return router.resend(self.out, lost, now)

    def source_seq(self, viewer_ext_seq: int) -> int | None:
        """The publisher's extended sequence number a viewer's one came from (current mapping)."""
        seq = viewer_ext_seq - self.out.seq_offset
        return seq if seq > 0 else None

    def stats(self) -> dict[str, object]:
        counts = self.out.retransmissions
        return {
            "nacks_received": self.nacks_received,
            "rtx": self.rtx,
            "rtt_ms": round(self.rtt * 1000, 1) if self.rtt_measured else None,
            "rate_limit_bps": int(max(RTX_MIN_RATE_BPS, self.rate_bps)),
            **{k.replace("-", "_"): v for k, v in counts.items()},
        }
