"""BenchPublisher: `PacketPublisher` that stamps each packet's probe at the moment it is sent.

`PacketPublisher` takes one timestamp per frame; a frame of 10 packets built and protected in
Python takes long enough that later packets would carry that build time as "server latency".
"""

from __future__ import annotations

import struct
import time

from sfu.testing import PacketPublisher, media

_Q = struct.Struct("!Q")
PROBE_SEARCH = 64  # the probe follows the codec header within this many payload bytes


class BenchPublisher(PacketPublisher):
    def _send_packet(self, stream, payload: bytes, ts: int, marker: bool) -> None:  # type: ignore[no-untyped-def]
        pos = payload.find(media.PROBE_MAGIC, 0, PROBE_SEARCH)
        if pos >= 0:
            payload = payload[: pos + 4] + _Q.pack(time.monotonic_ns()) + payload[pos + 12 :]
        super()._send_packet(stream, payload, ts, marker)
