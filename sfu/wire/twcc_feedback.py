"""Transport-cc feedback from a receiver's arrival records
(draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1).

Shared by the two receivers of transport-wide sequence numbers: the server towards its publishers
(`sfu.core.twcc.FeedbackSender`) and the test viewer (`sfu.testing.viewer.PacketViewer`). Each keeps
its own arrival records and calls `FeedbackBuilder.build` once per feedback interval.
"""

from __future__ import annotations

import bisect

from . import rtcp

_MAX_TIME_US = 1 << 62  # above any arrival time: bisects past every entry of one sequence number


class FeedbackBuilder:
    """Turns one interval's arrivals into feedback packets, numbered across intervals.

    Driven by `build(media_ssrc, arrivals)`, once per feedback interval, with the (extended
    transport-wide sequence number, arrival time in µs) records since the previous call. Output: the
    `rtcp.TransportCc` packets to send. Carried from one call to the next: `reported` (the highest
    number already in a feedback: an arrival at or below it came too late, it went out as lost),
    `fb_count` (the feedback packet count, mod 256) and `packets_sent`.
    """

    def __init__(self, sender_ssrc: int, reported: int | None = None,
                 max_size: int = rtcp.TWCC_MAX_PACKET_SIZE) -> None:
        self.sender_ssrc = sender_ssrc
        self.max_size = max_size  # bytes per feedback packet the builder aims for
        self.reported = reported  # None: nothing reported yet, every number is new
        self.fb_count = 0
        self.packets_sent = 0

    def build(self, media_ssrc: int, arrivals: list[tuple[int, int]]) -> list[rtcp.TransportCc]:
        """Feedback for `arrivals` (any order, duplicates allowed; the list is sorted in place): each
        number above `reported` once, at its first (earliest) arrival, in sequence order."""
        if not arrivals:
            return []
        arrivals.sort()  # almost always in order already (linear then)
        reported = self.reported
        start = 0 if reported is None else bisect.bisect_right(arrivals, (reported, _MAX_TIME_US))
        unique: list[tuple[int, int | None]] = []
        last = reported
        for entry in arrivals[start:] if start else arrivals:
            if entry[0] != last:
                unique.append(entry)
                last = entry[0]
        if not unique:
            return []
        packets = rtcp.build_transport_cc(self.sender_ssrc, media_ssrc, unique, self.fb_count, self.max_size)
        self.fb_count = (self.fb_count + len(packets)) & 0xFF
        self.reported = unique[-1][0]
        self.packets_sent += len(packets)
        return packets
