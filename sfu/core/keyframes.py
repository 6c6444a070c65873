"""Keyframe requests towards one publisher layer: merged, throttled, retried.

Inputs: `want(now)` when anyone needs a keyframe (a viewer's PLI/FIR, a viewer joining, a layer
switch), `keyframe_arrived(now)` when the layer's keyframe counter moved. Output: `poll(now)` says
whether to send one PLI/FIR now; `next_deadline()` says when to poll again.

Rules (RFC 4585 §6.3.1 PLI, RFC 5104 §4.3.1 FIR; policy in the spirit of mediasoup's
KeyFrameRequestManager): at most one request outstanding; a request is retried if no keyframe
arrives within `RETRY_S`; two requests are never closer than `MIN_INTERVAL_S`, so a storm of PLIs
from any number of viewers becomes at most one upstream request per interval.
"""

from __future__ import annotations

MIN_INTERVAL_S = 0.5  # never ask a publisher more often than this (encoders hate PLI storms)
RETRY_S = 1.0  # no keyframe after this long: ask again
GIVE_UP_S = 10.0  # a publisher that never answers (OBS ignores PLI): stop retrying after this


class KeyframeRequester:
    """Merges and throttles keyframe requests for one publisher layer."""

    def __init__(self) -> None:
        self.wanted_since: float | None = None
        self.last_sent: float | None = None
        self.sent = 0
        self.received_wants = 0
        self.suppressed = 0

    def want(self, now: float) -> None:
        """Someone needs a keyframe from this layer."""
        self.received_wants += 1
        if self.wanted_since is None:
            self.wanted_since = now
        else:
            self.suppressed += 1

    def keyframe_arrived(self, at: float) -> None:
        """A keyframe arrived at `at`: it answers the request only if it came after the want
        (a keyframe older than the request, seen late by the poller, does not cancel it)."""
        if self.wanted_since is not None and at >= self.wanted_since:
            self.wanted_since = None

    def poll(self, now: float) -> bool:
        """True when a request must be sent now (the caller sends it)."""
        if self.wanted_since is None:
            return False
        if now - self.wanted_since > GIVE_UP_S:
            self.wanted_since = None
            return False
        if self.last_sent is not None:
            since = now - self.last_sent
            if since < MIN_INTERVAL_S:
                return False
            if self.last_sent >= self.wanted_since and since < RETRY_S:
                return False
        self.last_sent = now
        self.sent += 1
        return True

    def next_deadline(self) -> float | None:
        if self.wanted_since is None:
            return None
        if self.last_sent is None:
            return self.wanted_since
        if self.last_sent >= self.wanted_since:
            return self.last_sent + RETRY_S
        return self.last_sent + MIN_INTERVAL_S
