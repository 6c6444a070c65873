"""What each incoming simulcast layer is: its picture size, its bitrate, whether it still arrives.

Layers are ranked by what they carry, never by their rid: browsers name them q/h/f by convention
only and OBS uses "0".."3" with "0" the highest. The picture size comes from keyframes (the fast
path reads VP8 / VP9 sizes itself and copies H.264 SPS / AV1 sequence header bytes, parsed by
`sfu/wire/codecs.py`);
where no size is known the measured bitrate decides.

Inputs: `LayerMeter.sample(now)` every tick (reads the fast-path counters). Outputs: `rank(...)`,
`timestamp_hint(...)`. Sans-IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import _fastpath
from ..wire.codecs import av1_sequence_resolution, h264_sps_resolution

STALE_S = 1.0  # a layer with no packet for this long is unavailable (a browser paused it)
RATE_WINDOW_S = 0.5  # bitrate sampling period
RATE_SMOOTHING = 0.3  # weight of a new sample in the moving average


@dataclass
class LayerMeter:
    """Measured bitrate and picture size of one incoming layer (`InStream`)."""

    stream: _fastpath.InStream
    codec: str
    bitrate_bps: float = 0.0
    fps: float = 0.0  # frames a second (InStream.frames), smoothed as the bitrate
    width: int = 0
    height: int = 0
    _last_bytes: int = 0
    _last_frames: int = 0
    _last_at: float | None = None
    _config_count: int = 0

    def sample(self, now: float) -> None:
        st = self.stream
        if self._last_at is None:
            self._last_at, self._last_bytes, self._last_frames = now, st.bytes, st.frames
        elif now - self._last_at >= RATE_WINDOW_S:
            rate = (st.bytes - self._last_bytes) * 8 / (now - self._last_at)
            fps = (st.frames - self._last_frames) / (now - self._last_at)
            if self.bitrate_bps == 0.0:
                self.bitrate_bps, self.fps = rate, fps
            else:
                self.bitrate_bps += RATE_SMOOTHING * (rate - self.bitrate_bps)
                self.fps += RATE_SMOOTHING * (fps - self.fps)
            self._last_at, self._last_bytes, self._last_frames = now, st.bytes, st.frames
        width, height, config, count = _fastpath.layer_info(st)
        if width and height:
            self.width, self.height = width, height
        elif count != self._config_count and config:
            self._config_count = count
            size = h264_sps_resolution(config) if self.codec == "H264" else (
                av1_sequence_resolution(config) if self.codec == "AV1" else None)
            if size:
                self.width, self.height = size

    def available(self, now: float) -> bool:
        st = self.stream
        return bool(st.started) and now - st.last_packet_at <= STALE_S


def rank(meters: list[LayerMeter]) -> list[LayerMeter]:
    """Low to high: by picture size when every layer has one, else by measured bitrate."""
    if meters and all(m.width and m.height for m in meters):
        return sorted(meters, key=lambda m: (m.width * m.height, m.bitrate_bps))
    return sorted(meters, key=lambda m: m.bitrate_bps)


def timestamp_hint(
    current_sr: object | None, target_sr: object | None, clock_rate: int, ts_offset: int
) -> int | None:
    """`hint32` for `_fastpath.switch_source`: maps the target layer's RTP time onto the current
    layer's timeline (both from the publisher's sender reports, RFC 3550 §6.4.1), then onto the
    viewer's through the current offset. None when either report is missing."""
    if current_sr is None or target_sr is None:
        return None
    ntp_delta_s = (target_sr.ntp - current_sr.ntp) / 2**32  # type: ignore[attr-defined]
    delta = current_sr.rtp_timestamp - target_sr.rtp_timestamp + round(ntp_delta_s * clock_rate)  # type: ignore[attr-defined]
    return (delta + ts_offset) & 0xFFFFFFFF


__all__ = [
    "LayerMeter", "STALE_S", "rank",
    "timestamp_hint",
]
