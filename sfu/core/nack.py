"""Generic NACKs towards a publisher (the server is the receiver): which packets to ask for, when.

Inputs: `on_gaps(gaps, overflowed, now, last_keyframe_seq)` with the gaps the fast path recorded
(`InStream.take_gaps()`: (first missing extended seq, count) pairs, after the batch they appeared
in), `request(ext_seq, now)` when a viewer asked for a packet the server never got, `set_rtt(rtt)`.
Output: `poll(now, still_missing)` returns the extended sequence numbers to put in one NACK now
(`still_missing` is `InStream.missing`: the received bitmap in C says what arrived meanwhile);
`next_deadline()`; `keyframe_needed` (too much is missing: ask for a keyframe instead).

Policy (RFC 4585 §6.2.1 generic NACK; limits in the spirit of libwebrtc's NackRequester and
pion's nack generator): wait `NACK_REORDER_WAIT_S` for reordering before the first request, then
ask again about once per RTT, at most `NACK_MAX_TRIES` times; more than `MAX_MISSING` packets
outstanding at once is no longer worth repairing packet by packet: the list is cut to the packets
after the last keyframe, and if that is still too long, cleared with a keyframe request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

NACK_REORDER_WAIT_S = 0.01  # wait for a reordered packet before the first request
NACK_MAX_TRIES = 10  # requests per packet, then it counts as lost (libwebrtc: 10)
NACK_MIN_RETRY_S = 0.01  # never ask for one packet more often than this, whatever the RTT
NACK_RETRY_RTT_FACTOR = 1.1  # next request after about one RTT (a little more: its answer's way)
DEFAULT_RTT_S = 0.1  # until an XR DLRR answer measures it (RFC 3611 §4.5)
MAX_RTT_S = 1.0  # a measurement above this is clamped (retries stay useful)
MAX_MISSING = 400  # outstanding packets per stream beyond which a keyframe is cheaper
MAX_AGE_SEQS = 3000  # packets this far behind the newest are not asked for any more


class NackGenerator:
    """Missing packets of one incoming stream and when to ask for each again."""

    def __init__(self) -> None:
        self.pending: dict[int, list] = {}  # ext seq -> [due, tries]
        self.rtt = DEFAULT_RTT_S
        self.rtt_measured = False
        self.highest = -1
        self.keyframe_needed = False
        # counters
        self.nacks_sent = 0  # NACK packets
        self.seqs_requested = 0  # sequence numbers requested (with retries)
        self.recovered = 0  # arrived after being missing (late or repaired)
        self.given_up = 0  # NACK_MAX_TRIES exhausted, or cut off by too much loss
        self.keyframe_requests = 0
        self.viewer_requests = 0  # requests that came from a viewer's NACK

    # -- inputs -----------------------------------------------------------------------------

    def set_rtt(self, rtt: float) -> None:
        self.rtt = min(max(rtt, 0.0), MAX_RTT_S)
        self.rtt_measured = True

    def on_gaps(self, gaps: Iterable[tuple[int, int]], overflowed: bool, now: float, last_keyframe_seq: int = -1) -> None:
        due = now + NACK_REORDER_WAIT_S
        for first, count in gaps:
            if count > MAX_MISSING:
                first, count = first + count - MAX_MISSING - 1, MAX_MISSING + 1  # surely too many
            for seq in range(first, first + count):
                self.pending.setdefault(seq, [due, 0])
            self.highest = max(self.highest, first + count)
        if overflowed or len(self.pending) > MAX_MISSING:
            self._too_much(last_keyframe_seq, overflowed)

    def request(self, ext_seq: int, now: float) -> bool:
        """A viewer needs `ext_seq`, which this server never received: ask now (if not asked)."""
        if ext_seq in self.pending or (self.highest >= 0 and ext_seq < self.highest - MAX_AGE_SEQS):
            return False
        self.pending[ext_seq] = [now, 0]
        self.viewer_requests += 1
        return True

    # -- outputs ----------------------------------------------------------------------------

    @property
    def retry_interval(self) -> float:
        return max(NACK_MIN_RETRY_S, self.rtt * NACK_RETRY_RTT_FACTOR)

    def poll(self, now: float, still_missing: Callable[[list[int]], list[int]]) -> list[int]:
        """Extended sequence numbers to request now, in order."""
        if not self.pending:
            return []
        candidates = sorted(seq for seq, entry in self.pending.items() if entry[0] <= now)
        if not candidates:
            return []
        missing = set(still_missing(candidates))
        out = []
        floor = self.highest - MAX_AGE_SEQS
        for seq in candidates:
            if seq not in missing:
                # arrived meanwhile (or left the received window: nothing more to do)
                del self.pending[seq]
                self.recovered += 1
                continue
            entry = self.pending[seq]
            if entry[1] >= NACK_MAX_TRIES or seq < floor:
                del self.pending[seq]
                self.given_up += 1
                continue
            entry[1] += 1
            entry[0] = now + self.retry_interval
            out.append(seq)
        if out:
            self.nacks_sent += 1
            self.seqs_requested += len(out)
        return out

    def next_deadline(self) -> float | None:
        if not self.pending:
            return None
        return min(entry[0] for entry in self.pending.values())

    def take_keyframe_needed(self) -> bool:
        needed, self.keyframe_needed = self.keyframe_needed, False
        return needed

    # -- internals ----------------------------------------------------------------------------

    def _too_much(self, last_keyframe_seq: int, overflowed: bool = False) -> None:
        """libwebrtc's rule: drop what precedes the last keyframe; still too much: start over.
        `overflowed`: the fast path lost track of some gaps, so a keyframe is needed anyway."""
        before = len(self.pending)
        if last_keyframe_seq >= 0:
            for seq in [s for s in self.pending if s < last_keyframe_seq]:
                del self.pending[seq]
        if overflowed or len(self.pending) > MAX_MISSING:
            self.pending.clear()
            self.keyframe_needed = True
            self.keyframe_requests += 1
        self.given_up += before - len(self.pending)
