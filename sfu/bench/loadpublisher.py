"""BenchPublisher: `PacketPublisher` that stamps each packet's probe at the moment it is sent,
and optionally paces its video the way a browser's sender does.

`PacketPublisher` takes one timestamp per frame; a frame of 10 packets built and protected in
Python takes long enough that later packets would carry that build time as "server latency".

Pacing (`pacing` > 0): video packets wait in a queue that drains at `pacing` x the sum of the
layers' bitrates, in bursts of at most `PACE_INTERVAL_S` worth of bytes (libwebrtc's pacer:
factor 2.5, 5 ms interval budget); audio bypasses the queue. Without it (the default) a frame's
packets leave back to back, as from a sender without a pacer (GStreamer's webrtcbin): every packet
of the frame reaches the server at once and the last one waits for the fan-out of the others.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from typing import Any

from sfu.testing import PacketPublisher, media

_Q = struct.Struct("!Q")
PROBE_SEARCH = 64  # the probe follows the codec header within this many payload bytes
PACE_INTERVAL_S = 0.005  # the pacer's budget interval (and wake-up period while it has packets)


class BenchPublisher(PacketPublisher):
    def __init__(self, *args: Any, pacing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if pacing < 0:
            raise ValueError("pacing must be >= 0")
        self.pacing = pacing
        self._pace_bps = pacing * sum(s.layer.bitrate for s in self._video_streams if s.layer is not None)
        self._pace_queue: deque[tuple[Any, bytes, int, bool]] = deque()
        self._pace_budget = 0.0  # bytes that may leave now
        self._pace_at: float | None = None
        self.paced_max_queue = 0

    def _send_packet(self, stream, payload: bytes, ts: int, marker: bool) -> None:  # type: ignore[no-untyped-def]
        if self._pace_bps > 0 and stream.kind == "video":
            self._pace_queue.append((stream, payload, ts, marker))
            self.paced_max_queue = max(self.paced_max_queue, len(self._pace_queue))
            return
        self._stamp_and_send(stream, payload, ts, marker)

    def _stamp_and_send(self, stream, payload: bytes, ts: int, marker: bool) -> None:  # type: ignore[no-untyped-def]
        pos = payload.find(media.PROBE_MAGIC, 0, PROBE_SEARCH)
        if pos >= 0:
            payload = payload[: pos + 4] + _Q.pack(time.monotonic_ns()) + payload[pos + 12 :]
        super()._send_packet(stream, payload, ts, marker)

    def _periodic(self, now: float) -> float:
        deadline = super()._periodic(now)  # queues this tick's frames when pacing
        if self._pace_queue:
            deadline = min(deadline, self._release(now))
        return deadline

    def _release(self, now: float) -> float:
        """Send what the interval budget allows; the next wake-up while packets wait."""
        interval_bytes = self._pace_bps / 8 * PACE_INTERVAL_S
        elapsed = now - self._pace_at if self._pace_at is not None else PACE_INTERVAL_S
        self._pace_at = now
        self._pace_budget = min(self._pace_budget + elapsed * self._pace_bps / 8, interval_bytes)
        queue = self._pace_queue
        while queue and self._pace_budget > 0:
            stream, payload, ts, marker = queue.popleft()
            self._pace_budget -= len(payload) + 40  # RTP header, extensions, SRTP tag (about)
            self._stamp_and_send(stream, payload, ts, marker)
        return now + PACE_INTERVAL_S if queue else float("inf")
