"""Transport-wide congestion control feedback, both directions
(draft-holmer-rmcat-transport-wide-cc-extensions-01).

- `FeedbackSender` (towards a publisher): the fast path records the transport-wide sequence number
  and arrival time of every incoming media packet (`Endpoint.take_twcc()`); every
  `FEEDBACK_INTERVAL_S` this turns them into feedback packets. Without it a browser never ramps its
  bitrate up, and never sends its top simulcast layer (DESIGN.md).
- From a viewer: the viewer's feedback names our transport-wide sequence numbers; the fast path
  remembers when each was sent and how big it was. `_fastpath.FeedbackAggregator` (sfu/_twcc.pxi)
  parses the feedback in the RTCP compound, pairs it with the send log and returns one
  `FeedbackSummary` per compound for `SendSideBwe.on_feedback_summary` (no object per packet).
  Its pure-Python twin, the contract both keep and what tests and simulations use:
  `FeedbackMatcher` (parsed `rtcp.TransportCc` -> `PacketResult`s) then `SummaryBuilder`
  (`PacketResult`s -> `FeedbackSummary`).

Sans-IO: values in, values out; `now` where time matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import _fastpath
from ..wire import rtcp
from ..wire.twcc_feedback import FeedbackBuilder
from .bwe import BURST_S, PacketResult

FEEDBACK_INTERVAL_S = 0.05  # libwebrtc sends feedback every 50-100 ms depending on rate
MAX_PENDING = 4096  # arrivals kept between two feedbacks (a bound, not a tuning)
SEEN_RING = 8192  # feedback entries already used, per viewer (duplicate reports ignored)


class FeedbackSender:
    """Builds transport-cc feedback for one publisher from the fast path's arrival records.

    Driven by `add(arrivals)` (the fast path's `Endpoint.take_twcc()`) and `build(media_ssrc)` every
    `FEEDBACK_INTERVAL_S`; `sfu.wire.twcc_feedback.FeedbackBuilder` numbers and builds the packets.
    """

    def __init__(self, sender_ssrc: int) -> None:
        self.sender_ssrc = sender_ssrc
        self.highest: int | None = None  # extended sequence number
        self.pending: dict[int, int] = {}  # extended sequence number -> first arrival (µs)
        self.feedback = FeedbackBuilder(sender_ssrc)
        self.next_at = 0.0

    @property
    def reported(self) -> int | None:
        """Highest extended number already in a feedback."""
        return self.feedback.reported

    @property
    def packets_sent(self) -> int:
        return self.feedback.packets_sent

    def add(self, arrivals: list[tuple[int, int]]) -> None:
        """(seq16, arrival_us) pairs, in arrival order."""
        reported = self.feedback.reported
        for seq, arrival in arrivals:
            if self.highest is None:
                ext = seq
            else:
                delta = (seq - self.highest) & 0xFFFF
                ext = self.highest + delta if delta < 0x8000 else self.highest + delta - 0x10000
            if self.highest is None or ext > self.highest:
                self.highest = ext
            if reported is not None and ext <= reported:
                continue  # too late: already reported as lost
            if len(self.pending) < MAX_PENDING:
                self.pending.setdefault(ext, arrival)

    def build(self, media_ssrc: int) -> list[rtcp.TransportCc]:
        if not self.pending:
            return []
        arrivals = list(self.pending.items())
        self.pending = {}
        return self.feedback.build(media_ssrc, arrivals)


class FeedbackMatcher:
    """Pairs one viewer's transport-cc feedback with what the fast path sent on its endpoint
    (reference for `_fastpath.FeedbackAggregator`: results in transport-wide sequence order)."""

    def __init__(self, endpoint: _fastpath.Endpoint) -> None:
        self.endpoint = endpoint
        self._seen = [-1] * SEEN_RING
        self.unknown = 0
        self.duplicates = 0
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
                self.duplicates += 1
                continue  # reported before (feedback repeats; a late "received" is ignored too)
            if arrival is not None:
                self._seen[slot] = ext
            send_us, size, flags = record
            results.append(PacketResult(send_us / 1e6, arrival, size, bool(flags & _fastpath.SEND_FLAG_PADDING)))
        self.matched += len(results)
        return results  # sequence order is send order: the send log is written as numbers are taken


_INF = float("inf")


@dataclass(slots=True)
class FeedbackSummary:
    """What one RTCP compound's transport-cc feedback says (the same fields as
    `_fastpath.FeedbackSummary`, whose docstring defines them)."""

    feedbacks: int = 1
    malformed: int = 0
    matched: int = 0
    lost: int = 0
    acked: int = 0
    unknown: int = 0
    duplicates: int = 0
    acked_bytes: int = 0
    max_send: float = -1.0
    continues_group: bool = False
    bursts: list[tuple[float, float, float, float, int, int]] = field(default_factory=list)
    probe_count: int = 0
    probe_lost: int = 0
    probe_bytes: int = 0
    probe_first_size: int = 0
    probe_first_send: float = -1.0
    probe_first_arrival: float = -1.0
    probe_last_send: float = -1.0
    probe_last_arrival: float = -1.0


class SummaryBuilder:
    """`PacketResult`s (in send order) -> `FeedbackSummary`, as `_fastpath.FeedbackAggregator` does
    in C after matching. Keeps the open send-burst group between feedbacks (gcc-02 §5.2)."""

    def __init__(self) -> None:
        self.group_send: float | None = None

    def summarize(self, results: list[PacketResult], probe_start: float = _INF,
                  probe_end: float = -_INF) -> FeedbackSummary:
        s = FeedbackSummary()
        burst: list | None = None  # [min_send, max_send, min_arrival, max_arrival, count, bytes]
        for r in results:
            send = r.send_time
            s.matched += 1
            s.max_send = max(s.max_send, send)
            if r.arrival_time is None:
                s.lost += 1
                if probe_start <= send <= probe_end:
                    s.probe_lost += 1
                continue
            arrival = r.arrival_time
            s.acked += 1
            s.acked_bytes += r.size
            if self.group_send is not None and send - self.group_send <= BURST_S:
                if burst is None and not s.bursts:
                    s.continues_group = True
            else:
                self.group_send = send
                if burst is not None:
                    s.bursts.append(tuple(burst))  # type: ignore[arg-type]
                    burst = None
            if burst is None:
                burst = [send, send, arrival, arrival, 0, 0]
            else:
                burst[0], burst[1] = min(burst[0], send), max(burst[1], send)
                burst[2], burst[3] = min(burst[2], arrival), max(burst[3], arrival)
            burst[4] += 1
            burst[5] += r.size
            if probe_start <= send <= probe_end:
                if s.probe_count == 0:
                    s.probe_first_send, s.probe_first_arrival, s.probe_first_size = send, arrival, r.size
                else:
                    s.probe_bytes += r.size
                s.probe_last_send = max(s.probe_last_send, send)
                s.probe_last_arrival = max(s.probe_last_arrival, arrival)
                s.probe_count += 1
        if burst is not None:
            s.bursts.append(tuple(burst))  # type: ignore[arg-type]
        return s
