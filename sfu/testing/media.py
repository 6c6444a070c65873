"""Synthetic RTP for the packet-level test clients: no encoder, no decoder.

Pure functions: values in, bytes out (and the reverse for the few things a viewer checks).
Every payload carries a *probe* after its codec header: a 4-byte magic, the sender's
`time.monotonic_ns()` (8 bytes), a frame counter (4 bytes) and a layer index (1 byte), so
a receiver on the same host can measure latency and tell which simulcast layer it gets.

Codec headers are valid enough for an SFU's keyframe sniffers and resolution probes:
- VP8 (RFC 7741 §4.2 payload descriptor with a 15-bit picture ID; RFC 6386 §9.1 frame tag;
  keyframes carry the start code 9d 01 2a and width/height);
- H.264 (RFC 6184: STAP-A with SPS + PPS + an SEI carrying the probe, then FU-A IDR slices
  for keyframes; FU-A or single NAL non-IDR slices otherwise). The SPS is a real Baseline
  SPS (profile 42e01f) encoding the layer's width and height;
- Opus (RFC 7587): one TOC byte (CELT fullband 20 ms) then the probe.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sfu.wire.codecs import h264_sps_resolution

PROBE_MAGIC = b"\xa5\x5a\x5f\x54"
_PROBE = struct.Struct("!QIB")
PROBE_LENGTH = len(PROBE_MAGIC) + _PROBE.size  # 17
AUDIO_LAYER = 0xFF  # layer index written in audio probes

MAX_RTP_PACKET = 1200  # bytes of plain RTP (before SRTP), like browsers' default
_RTP = struct.Struct("!BBHII")
_FILL = 0x55  # filler byte: never forms 00 00 (no start-code emulation in H.264 payloads)

# RFC 8285 one-byte header extensions
EXT_PROFILE_ONE_BYTE = 0xBEDE


def probe(send_ns: int, frame: int, layer: int) -> bytes:
    return PROBE_MAGIC + _PROBE.pack(send_ns, frame & 0xFFFFFFFF, layer)


def find_probe(payload: bytes, start: int = 0, window: int = 96) -> tuple[int, int, int] | None:
    """(send_ns, frame, layer) of the probe in `payload[start:start+window]`, or None."""
    pos = payload.find(PROBE_MAGIC, start, start + window)
    if pos < 0 or pos + PROBE_LENGTH > len(payload):
        return None
    return _PROBE.unpack_from(payload, pos + 4)


# ---------------------------------------------------------------------------------------
# RTP header


def one_byte_extensions(elements: list[tuple[int, bytes]]) -> bytes:
    """RFC 8285 §4.2 one-byte-header extension block (ids 1..14, 1..16 bytes each)."""
    body = b"".join(bytes([(ext_id << 4) | (len(value) - 1)]) + value for ext_id, value in elements)
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", EXT_PROFILE_ONE_BYTE, len(body) // 4) + body


def rtp_header(pt: int, seq: int, ts: int, ssrc: int, marker: bool, extension: bytes = b"") -> bytes:
    b0 = 0x90 if extension else 0x80
    return _RTP.pack(b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + extension


def split_sizes(total: int, per_packet_max: int) -> list[int]:
    """Split `total` bytes into the fewest near-equal chunks of at most `per_packet_max`."""
    total = max(total, 1)
    count = -(-total // per_packet_max)
    base, extra = divmod(total, count)
    return [base + 1 if i < extra else base for i in range(count)]


# ---------------------------------------------------------------------------------------
# VP8 (RFC 7741)

VP8_FIRST_PARTITION_SIZE = 10  # bytes announced in the frame tag; any value works unparsed


def vp8_descriptor(picture_id: int, start: bool) -> bytes:
    """X=1, S=start, PID=0; I=1 with a 15-bit picture ID (M=1)."""
    pid = picture_id & 0x7FFF
    return bytes([0x90 if start else 0x80, 0x80, 0x80 | (pid >> 8), pid & 0xFF])


def vp8_frame_header(keyframe: bool, width: int, height: int) -> bytes:
    """RFC 6386 §9.1: 3-byte frame tag (P=0 for keyframes), + start code and size."""
    size = VP8_FIRST_PARTITION_SIZE
    tag = (0 if keyframe else 1) | (0 << 1) | (1 << 4) | ((size & 0x7) << 5)
    header = bytes([tag, (size >> 3) & 0xFF, (size >> 11) & 0xFF])
    if keyframe:
        header += b"\x9d\x01\x2a" + struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    return header


def vp8_frame_payloads(
    *, keyframe: bool, width: int, height: int, picture_id: int, frame_bytes: int,
    max_payload: int, probe_bytes: bytes,
) -> list[bytes]:
    first_extra = len(vp8_frame_header(keyframe, width, height))
    overhead = 4 + len(probe_bytes)
    sizes = split_sizes(frame_bytes + first_extra, max_payload - overhead)
    payloads = []
    for index, size in enumerate(sizes):
        head = vp8_descriptor(picture_id, index == 0)
        if index == 0:
            head += vp8_frame_header(keyframe, width, height)
            size -= first_extra
        payloads.append(head + probe_bytes + bytes([_FILL]) * max(0, size - len(probe_bytes)))
    return payloads


def vp8_is_keyframe(payload: bytes) -> tuple[bool, int, int]:
    """(is keyframe start, width, height) from a VP8 RTP payload; width/height 0 if not."""
    n = len(payload)
    if n < 1:
        return False, 0, 0
    b0 = payload[0]
    off = 1
    if b0 & 0x80:
        if n < 2:
            return False, 0, 0
        b1 = payload[1]
        off = 2
        if b1 & 0x80:
            off += 2 if (off < n and payload[off] & 0x80) else 1
        if b1 & 0x40:
            off += 1
        if b1 & 0x30:
            off += 1
    if not (b0 & 0x10) or (b0 & 0x07) or off >= n or payload[off] & 0x01:
        return False, 0, 0
    if n >= off + 10 and payload[off + 3 : off + 6] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", payload, off + 6)
        return True, width & 0x3FFF, height & 0x3FFF
    return True, 0, 0


# ---------------------------------------------------------------------------------------
# H.264 (RFC 6184)


class _BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, count: int, value: int) -> None:
        self.bits.extend((value >> (count - 1 - i)) & 1 for i in range(count))

    def ue(self, value: int) -> None:
        code = value + 1
        length = code.bit_length()
        self.u(length - 1, 0)
        self.u(length, code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        self.bits.append(1)  # rbsp_stop_one_bit
        self.bits.extend([0] * (-len(self.bits) % 8))
        raw = bytes(
            int("".join(map(str, self.bits[i : i + 8])), 2) for i in range(0, len(self.bits), 8)
        )
        return emulation_prevention(raw)


def emulation_prevention(raw: bytes) -> bytes:
    """H.264 §7.4.1: insert 0x03 after two zero bytes when the next byte is <= 3."""
    out = bytearray()
    zeros = 0
    for byte in raw:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def h264_sps(width: int, height: int) -> bytes:
    """Baseline SPS (profile_idc 66, constraints e0, level 3.1) for width x height (even)."""
    mbs_w = -(-width // 16)
    mbs_h = -(-height // 16)
    w = _BitWriter()
    w.ue(0)  # seq_parameter_set_id
    w.ue(0)  # log2_max_frame_num_minus4
    w.ue(2)  # pic_order_cnt_type
    w.ue(1)  # max_num_ref_frames
    w.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    w.ue(mbs_w - 1)
    w.ue(mbs_h - 1)
    w.u(1, 1)  # frame_mbs_only_flag
    w.u(1, 1)  # direct_8x8_inference_flag
    crop_right = (mbs_w * 16 - width) // 2  # 4:2:0 crop units are 2 pixels
    crop_bottom = (mbs_h * 16 - height) // 2
    if crop_right or crop_bottom:
        w.u(1, 1)
        for value in (0, crop_right, 0, crop_bottom):
            w.ue(value)
    else:
        w.u(1, 0)
    w.u(1, 0)  # vui_parameters_present_flag
    return b"\x67\x42\xe0\x1f" + w.rbsp()


def h264_pps() -> bytes:
    w = _BitWriter()
    w.ue(0)  # pic_parameter_set_id
    w.ue(0)  # seq_parameter_set_id
    w.u(1, 0)  # entropy_coding_mode_flag (CAVLC)
    w.u(1, 0)  # bottom_field_pic_order_in_frame_present_flag
    w.ue(0)  # num_slice_groups_minus1
    w.ue(0)  # num_ref_idx_l0_default_active_minus1
    w.ue(0)  # num_ref_idx_l1_default_active_minus1
    w.u(1, 0)  # weighted_pred_flag
    w.u(2, 0)  # weighted_bipred_idc
    w.se(0)  # pic_init_qp_minus26
    w.se(0)  # pic_init_qs_minus26
    w.se(0)  # chroma_qp_index_offset
    w.u(1, 1)  # deblocking_filter_control_present_flag
    w.u(1, 0)  # constrained_intra_pred_flag
    w.u(1, 0)  # redundant_pic_cnt_present_flag
    return b"\x68" + w.rbsp()


def h264_keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """Size from the SPS in a single-NAL or STAP-A payload, if there is one."""
    if not payload:
        return None
    nal_type = payload[0] & 0x1F
    if nal_type == 7:
        return h264_sps_resolution(payload)
    if nal_type == 24:
        pos = 1
        while pos + 3 <= len(payload):
            size = (payload[pos] << 8) | payload[pos + 1]
            if payload[pos + 2] & 0x1F == 7:
                return h264_sps_resolution(payload[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return None


# user_data_unregistered SEI (H.264 D.1.6) carrying the probe in the STAP-A
_SEI_UUID = bytes.fromhex("7366752d746573742d70726f62652d31")  # "sfu-test-probe-1"


def h264_probe_sei(probe_bytes: bytes) -> bytes:
    body = _SEI_UUID + probe_bytes
    return b"\x06\x05" + bytes([len(body)]) + body + b"\x80"


def stap_a(nalus: list[bytes]) -> bytes:
    nri = max((nalu[0] >> 5) & 3 for nalu in nalus)
    return bytes([(nri << 5) | 24]) + b"".join(struct.pack("!H", len(n)) + n for n in nalus)


# first slice-header byte: first_mb_in_slice=0 ("1"), slice_type ue(7)=I / ue(5)=P, then 0s
_SLICE_I = 0x88
_SLICE_P = 0x98


def h264_frame_payloads(
    *, keyframe: bool, width: int, height: int, frame_bytes: int, max_payload: int,
    probe_bytes: bytes,
) -> list[bytes]:
    """Keyframe: [STAP-A(SPS, PPS, SEI probe), FU-A IDR...]; else FU-A (or single) non-IDR."""
    payloads = []
    if keyframe:
        payloads.append(stap_a([h264_sps(width, height), h264_pps(), h264_probe_sei(probe_bytes)]))
        nal_header = 0x65  # NRI 3, type 5 (IDR slice)
    else:
        nal_header = 0x41  # NRI 2, type 1 (non-IDR slice)
    overhead = 2 + len(probe_bytes) + 1
    sizes = split_sizes(frame_bytes, max_payload - overhead)
    slice_byte = bytes([_SLICE_I if keyframe else _SLICE_P])
    if len(sizes) == 1:  # single NAL unit packet (an FU-A may not be both start and end)
        payloads.append(bytes([nal_header]) + slice_byte + probe_bytes + bytes([_FILL]) * sizes[0])
        return payloads
    indicator = (nal_header & 0xE0) | 28
    for index, size in enumerate(sizes):
        fu_header = nal_header & 0x1F
        if index == 0:
            fu_header |= 0x80
        if index == len(sizes) - 1:
            fu_header |= 0x40
        body = slice_byte if index == 0 else b""
        payloads.append(
            bytes([indicator, fu_header]) + body + probe_bytes
            + bytes([_FILL]) * max(0, size - len(probe_bytes))
        )
    return payloads


def h264_is_keyframe(payload: bytes) -> bool:
    """True for a packet that starts an IDR or carries an SPS (RFC 6184 §5.2 types)."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (5, 7):
        return True
    if nal_type == 28:
        return len(payload) > 1 and (payload[1] & 0x80) != 0 and (payload[1] & 0x1F) == 5
    if nal_type == 24:
        pos = 1
        while pos + 3 <= len(payload):
            size = (payload[pos] << 8) | payload[pos + 1]
            if payload[pos + 2] & 0x1F in (5, 7):
                return True
            pos += 2 + size
    return False


# ---------------------------------------------------------------------------------------
# Opus (RFC 7587)

OPUS_TOC_CELT_FB_20MS = (31 << 3)  # config 31: CELT fullband 20 ms, mono, one frame


def opus_payload(packet_bytes: int, probe_bytes: bytes) -> bytes:
    return bytes([OPUS_TOC_CELT_FB_20MS]) + probe_bytes + bytes([_FILL]) * max(
        0, packet_bytes - 1 - len(probe_bytes)
    )


# ---------------------------------------------------------------------------------------
# Simulcast layer plan


@dataclass(frozen=True, slots=True)
class LayerPlan:
    rid: str  # "" without simulcast
    index: int  # position in the publisher's rid list (written in probes)
    width: int
    height: int
    bitrate: int  # bits per second


TOP_WIDTH, TOP_HEIGHT = 1280, 720
MIN_LAYER_BITRATE = 50_000  # bits/s: keep low layers sending at least a packet per frame


def plan_layers(rids: list[str], top_bitrate: int) -> list[LayerPlan]:
    """Resolution and bitrate per layer: each step down halves width/height, quarters bitrate.

    Ranking: all-digit rids follow OBS ("0" is the highest); otherwise the list is
    low-to-high as browsers list q;h;f (the last rid is the full resolution).
    """
    if not rids:
        return [LayerPlan("", 0, TOP_WIDTH, TOP_HEIGHT, top_bitrate)]
    if all(rid.isdigit() for rid in rids):
        steps_down = [int(rid) for rid in rids]
    else:
        steps_down = [len(rids) - 1 - index for index in range(len(rids))]
    plans = []
    for index, (rid, down) in enumerate(zip(rids, steps_down, strict=False)):
        plans.append(
            LayerPlan(
                rid, index, max(16, (TOP_WIDTH >> down) & ~1), max(16, (TOP_HEIGHT >> down) & ~1),
                max(MIN_LAYER_BITRATE, top_bitrate >> (2 * down)),
            )
        )
    return plans
