"""Transport-wide congestion control feedback, both directions
(draft-holmer-rmcat-transport-wide-cc-extensions-01).

- `FeedbackSender` (towards a publisher): the fast path records the transport-wide sequence number
  and arrival time of every incoming media packet (`Endpoint.take_twcc()`); every
  `FEEDBACK_INTERVAL_S` this turns them into feedback packets. Without it a browser never ramps its
  bitrate up, and never sends its top simulcast layer (DESIGN.md).
- `FeedbackMatcher` (from a viewer): a viewer's feedback names our transport-wide sequence
  numbers; the fast path remembers when each was sent and how big it was
  (`_fastpath.sent_packets`); this pairs them into `PacketResult`s for the bandwidth estimate.

Sans-IO: values in, values out; `now` where time matters.
"""

from __future__ import annotations

from .. import _fastpath
from ..wire import rtcp
from .bwe import PacketResult

FEEDBACK_INTERVAL_S = 0.05  # libwebrtc sends feedback every 50-100 ms depending on rate
MAX_PENDING = 4096  # arrivals kept between two feedbacks (a bound, not a tuning)
SEEN_RING = 8192  # feedback entries already used, per viewer (duplicate reports ignored)


class FeedbackSender:
    """Builds transport-cc feedback for one publisher from the fast path's arrival records."""

    def __init__(self, sender_ssrc: int) -> None:
        self.sender_ssrc = sender_ssrc
        self.highest: int | None = None  # extended sequence number
        self.reported: int | None = None  # highest extended number already in a feedback
        self.pending: dict[int, int] = {}
        self.fb_count = 0
        self.packets_sent = 0
        self.next_at = 0.0

    def add(self, arrivals: list[tuple[int, int]]) -> None:
        """(seq16, arrival_us) pairs, in arrival order."""
        for seq, arrival in arrivals:
            if self.highest is None:
                ext = seq
            else:
                delta = (seq - self.highest) & 0xFFFF
                ext = self.highest + delta if delta < 0x8000 else self.highest + delta - 0x10000
            if self.highest is None or ext > self.highest:
                self.highest = ext
            if self.reported is not None and ext <= self.reported:
                continue  # too late: already reported as lost
            if len(self.pending) < MAX_PENDING:
                self.pending.setdefault(ext, arrival)

    def build(self, media_ssrc: int) -> list[rtcp.TransportCc]:
        if not self.pending:
            return []
        arrivals: list[tuple[int, int | None]] = sorted(self.pending.items())
        self.pending = {}
        packets = rtcp.build_transport_cc(self.sender_ssrc, media_ssrc, arrivals, self.fb_count)
        self.fb_count = (self.fb_count + len(packets)) & 0xFF
        self.reported = arrivals[-1][0]
        self.packets_sent += len(packets)
        return packets


class FeedbackMatcher:
    """Pairs one viewer's transport-cc feedback with what the fast path sent on its endpoint."""

    def __init__(self, endpoint: _fastpath.Endpoint) -> None:
        self.endpoint = endpoint
        self._seen = [-1] * SEEN_RING
        self.unknown = 0
        self.matched = 0

    def match(self, feedback: rtcp.TransportCc) -> list[PacketResult]:
        newest = int(self.endpoint.twcc_next) - 1
        if newest < 0 or not feedback.packets:
            return []
        base = newest - ((newest - feedback.base_sequence) & 0xFFFF)
        if base < 0:
            return []
        sent = _fastpath.sent_packets(self.endpoint, base, len(feedback.packets))
        arrival_us = feedback.reference_time * 64_000
        results: list[PacketResult] = []
        for i, (_seq, received, delta_us) in enumerate(feedback.packets):
            arrival: float | None = None
            if received and delta_us is not None:
                arrival_us += delta_us
                arrival = arrival_us / 1e6
            record = sent[i]
            ext = base + i
            if record is None:
                self.unknown += 1
                continue
            slot = ext % SEEN_RING
            if self._seen[slot] == ext:
                continue  # reported before (feedback repeats; a late "received" is ignored too)
            if arrival is not None:
                self._seen[slot] = ext
            send_us, size, flags = record
            results.append(PacketResult(send_us / 1e6, arrival, size, bool(flags & _fastpath.SEND_FLAG_PADDING)))
        self.matched += len(results)
        results.sort(key=lambda r: r.send_time)
        return results
