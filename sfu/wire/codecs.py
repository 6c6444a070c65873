"""Picture sizes read from codec bitstream headers: the H.264 sequence parameter set and the AV1
sequence header OBU. Used by the server to rank simulcast layers (`sfu/core/layers.py`) and by the
packet-level test clients to check what they received (`sfu/testing/media.py`). Pure functions;
malformed input gives None, never an exception.
"""

from __future__ import annotations


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
