"""What each incoming simulcast layer is: its picture size, its bitrate, whether it still arrives.

Layers are ranked by what they carry, never by their rid: browsers name them q/h/f by convention
only and OBS uses "0".."3" with "0" the highest. The picture size comes from keyframes (the fast
path reads VP8 / VP9 sizes itself and copies H.264 SPS / AV1 sequence header bytes, parsed here);
where no size is known the measured bitrate decides.

Inputs: `LayerMeter.sample(now)` every tick (reads the fast-path counters). Outputs: `rank(...)`,
`timestamp_hint(...)`. Sans-IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import _fastpath

STALE_S = 1.0  # a layer with no packet for this long is unavailable (a browser paused it)
RATE_WINDOW_S = 0.5  # bitrate sampling period
RATE_SMOOTHING = 0.3  # weight of a new sample in the moving average


class BitReader:
    """MSB-first bit reader with Exp-Golomb codes (ITU-T H.264 §9.1)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, count: int) -> int:
        value = 0
        for _ in range(count):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ValueError("out of bits")
            value = (value << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def _unescape(nal: bytes) -> bytes:
    """Remove emulation prevention bytes (00 00 03 -> 00 00), H.264 §7.4.1."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def h264_sps_resolution(nal: bytes) -> tuple[int, int] | None:
    """Width and height coded in an H.264 SPS NAL unit (§7.3.2.1.1), cropping applied."""
    try:
        r = BitReader(_unescape(nal[1:]))
        profile = r.u(8)
        r.u(16)  # constraint flags, level
        r.ue()  # seq_parameter_set_id
        chroma_format = 1
        if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
            chroma_format = r.ue()
            if chroma_format == 3:
                r.u(1)
            r.ue()
            r.ue()
            r.u(1)
            if r.u(1):  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma_format != 3 else 12):
                    if r.u(1):
                        last = nxt = 8
                        for _ in range(16 if i < 6 else 64):
                            if nxt:
                                nxt = (last + r.se() + 256) % 256
                            last = nxt or last
        r.ue()  # log2_max_frame_num_minus4
        poc_type = r.ue()
        if poc_type == 0:
            r.ue()
        elif poc_type == 1:
            r.u(1)
            r.se()
            r.se()
            for _ in range(r.ue()):
                r.se()
        r.ue()  # max_num_ref_frames
        r.u(1)
        width_mbs = r.ue() + 1
        height_units = r.ue() + 1
        frame_mbs_only = r.u(1)
        if not frame_mbs_only:
            r.u(1)
        r.u(1)  # direct_8x8_inference_flag
        width = width_mbs * 16
        height = height_units * 16 * (2 - frame_mbs_only)
        if r.u(1):  # frame_cropping_flag
            left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
            crop_x = 2 if chroma_format in (1, 2) else 1
            crop_y = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)
            width -= (left + right) * crop_x
            height -= (top + bottom) * crop_y
        return (width, height) if width > 0 and height > 0 else None
    except ValueError:
        return None


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise ValueError("truncated leb128")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            break
    return value, pos


def av1_sequence_resolution(payload: bytes) -> tuple[int, int] | None:
    """Maximum frame size from the sequence header OBU of an AV1 RTP payload (AV1 RTP §4.4,
    AV1 spec §5.5.1). Handles the common case (one operating point, no decoder model info)."""
    try:
        if not payload:
            return None
        w = (payload[0] >> 4) & 0x3
        pos = 1
        index = 0
        while pos < len(payload):
            if w == 0 or index < w - 1:
                size, pos = _leb128(payload, pos)
            else:
                size = len(payload) - pos
            obu = payload[pos : pos + size]
            pos += size
            index += 1
            if not obu:
                continue
            obu_type = (obu[0] >> 3) & 0xF
            start = 2 if obu[0] & 0x04 else 1
            if obu[0] & 0x02:  # has_size_field
                _, start = _leb128(obu, start)
            if obu_type == 1:
                return _av1_seq_header(obu[start:])
        return None
    except ValueError:
        return None


def _av1_seq_header(data: bytes) -> tuple[int, int] | None:
    r = BitReader(data)
    r.u(3)  # seq_profile
    r.u(1)  # still_picture
    if r.u(1):  # reduced_still_picture_header
        r.u(5)
    else:
        if r.u(1):  # timing_info_present_flag: decoder models make the layout variable
            return None
        r.u(1)  # initial_display_delay_present_flag (0 when no timing info in practice)
        count = r.u(5) + 1
        for _ in range(count):
            r.u(12)
            level = r.u(5)
            if level > 7:
                r.u(1)
    width_bits = r.u(4) + 1
    height_bits = r.u(4) + 1
    return r.u(width_bits) + 1, r.u(height_bits) + 1


@dataclass
class LayerMeter:
    """Measured bitrate and picture size of one incoming layer (`InStream`)."""

    stream: _fastpath.InStream
    codec: str
    bitrate_bps: float = 0.0
    width: int = 0
    height: int = 0
    _last_bytes: int = 0
    _last_at: float | None = None
    _config_count: int = 0

    def sample(self, now: float) -> None:
        st = self.stream
        if self._last_at is None:
            self._last_at, self._last_bytes = now, st.bytes
        elif now - self._last_at >= RATE_WINDOW_S:
            rate = (st.bytes - self._last_bytes) * 8 / (now - self._last_at)
            if self.bitrate_bps == 0.0:
                self.bitrate_bps = rate
            else:
                self.bitrate_bps += RATE_SMOOTHING * (rate - self.bitrate_bps)
            self._last_at, self._last_bytes = now, st.bytes
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
    "BitReader", "LayerMeter", "STALE_S", "av1_sequence_resolution", "h264_sps_resolution", "rank",
    "timestamp_hint",
]
