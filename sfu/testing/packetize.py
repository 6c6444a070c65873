"""RTP packetisers for real encoded frames: one encoded frame (access unit, temporal unit or
Opus packet) in, RTP payloads out, the last one to carry the marker bit.

Pure functions, no state but what the caller passes (VP8/VP9 picture ids). Used by
`FilePublisher`; the reverse is `depacketize`.

- H.264: RFC 6184 packetization-mode 1: single NAL unit packets, STAP-A (§5.7.1) for runs of
  small NAL units (parameter sets), FU-A (§5.8) for NAL units larger than a packet.
- VP8: RFC 7741 §4.2 payload descriptor with a 15-bit picture ID, S=1 on the first packet.
- VP9: RFC 9628 §4.2 non-flexible mode, 15-bit picture ID, B/E bits, P=0 on keyframes with a
  scalability structure (§4.2.1, one spatial layer, its size) on the first packet.
- AV1: the AV1 RTP payload format §4 (aggregation header Z/Y/W/N, W=0: every OBU element
  carries its LEB128 length; temporal delimiters dropped and OBU size fields removed, §5).
- Opus: RFC 7587 §4.2, one Opus packet per RTP payload.
"""

from __future__ import annotations

import struct

# ---------------------------------------------------------------------------------------
# H.264

NAL_TYPE_IDR = 5
NAL_TYPE_SPS = 7
NAL_TYPE_PPS = 8
NAL_TYPE_AUD = 9
STAP_A = 24
FU_A = 28


def annexb_nalus(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream (start codes 00 00 01 or 00 00 00 01)."""
    out = []
    starts = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        starts.append(pos + 3)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    for index, start in enumerate(starts):
        end = starts[index + 1] - 3 if index + 1 < len(starts) else len(data)
        nalu = data[start:end]
        if index + 1 < len(starts):
            nalu = nalu.rstrip(b"\x00")  # the next start code's leading zero (trailing_zero_8bits)
        if nalu:
            out.append(nalu)
    return out


def avcc_nalus(data: bytes, length_size: int = 4) -> list[bytes]:
    """NAL units of an AVCC (ISO 14496-15, length-prefixed) sample, as MP4/Matroska store them."""
    out = []
    pos = 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            raise ValueError("AVCC sample: NAL unit length past the end")
        out.append(data[pos : pos + size])
        pos += size
    return out


def avcc_config(extradata: bytes) -> tuple[int, list[bytes]]:
    """(NAL length size, [SPS..., PPS...]) from an AVCDecoderConfigurationRecord (ISO 14496-15 §5.3.3)."""
    if len(extradata) < 7 or extradata[0] != 1:
        raise ValueError("not an avcC record")
    length_size = (extradata[4] & 0x03) + 1
    sets = []
    pos = 5
    for mask in (0x1F, 0xFF):  # numOfSequenceParameterSets (5 bits), then numOfPictureParameterSets
        count = extradata[pos] & mask
        pos += 1
        for _ in range(count):
            size = struct.unpack_from("!H", extradata, pos)[0]
            sets.append(extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return length_size, sets


def h264_payloads(nalus: list[bytes], max_payload: int) -> list[bytes]:
    """RFC 6184 mode 1 payloads for one access unit (AUD NAL units are left out, §7.4.1.2.3 allows)."""
    payloads: list[bytes] = []
    run: list[bytes] = []  # small NAL units waiting to go out together

    def flush() -> None:
        if len(run) == 1:
            payloads.append(run[0])
        elif run:
            nri = max(n[0] & 0x60 for n in run)
            payloads.append(bytes([nri | STAP_A]) + b"".join(struct.pack("!H", len(n)) + n for n in run))
        run.clear()

    for nalu in nalus:
        if not nalu or nalu[0] & 0x1F == NAL_TYPE_AUD:
            continue
        if len(nalu) > max_payload:
            flush()
            header = nalu[0]
            indicator = (header & 0xE0) | FU_A
            body = nalu[1:]
            chunk = max_payload - 2
            for start in range(0, len(body), chunk):
                fu = header & 0x1F
                if start == 0:
                    fu |= 0x80
                if start + chunk >= len(body):
                    fu |= 0x40
                payloads.append(bytes([indicator, fu]) + body[start : start + chunk])
            continue
        stap_size = 1 + sum(2 + len(n) for n in run) + 2 + len(nalu)
        if run and stap_size > max_payload:
            flush()
        run.append(nalu)
    flush()
    return payloads


# ---------------------------------------------------------------------------------------
# VP8, VP9


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def vp8_payloads(frame: bytes, picture_id: int, max_payload: int) -> list[bytes]:
    """RFC 7741 §4.2: X=1, I=1 with M=1 (15-bit picture ID), S=1 on the first packet, PID 0."""
    pid = picture_id & 0x7FFF
    out = []
    for index, chunk in enumerate(_chunks(frame, max_payload - 4)):
        out.append(bytes([0x90 if index == 0 else 0x80, 0x80, 0x80 | (pid >> 8), pid & 0xFF]) + chunk)
    return out


def vp8_is_keyframe(frame: bytes) -> bool:
    """RFC 6386 §9.1: P bit 0 in the frame tag."""
    return bool(frame) and not frame[0] & 0x01


def vp9_payloads(
    frame: bytes, picture_id: int, max_payload: int, *, keyframe: bool, width: int = 0, height: int = 0,
) -> list[bytes]:
    """RFC 9628 §4.2, non-flexible mode without layer indices: I=1 (M=1), P=!keyframe, B on the
    first packet, E on the last; on a keyframe's first packet V=1 with one spatial layer's size."""
    pid = picture_id & 0x7FFF
    ss = b""
    if keyframe and width and height:
        ss = bytes([0x10]) + struct.pack("!HH", width, height)  # N_S=0, Y=1, G=0
    first_overhead = 3 + len(ss)
    chunks: list[bytes] = []
    pos = 0
    while pos < len(frame) or not chunks:
        room = max_payload - (first_overhead if not chunks else 3)
        chunks.append(frame[pos : pos + room])
        pos += room
    out = []
    for index, chunk in enumerate(chunks):
        b0 = 0x80  # I
        if not keyframe:
            b0 |= 0x40  # P
        if index == 0:
            b0 |= 0x08  # B
        if index == len(chunks) - 1:
            b0 |= 0x04  # E
        head = bytes([b0 | (0x02 if index == 0 and ss else 0), 0x80 | (pid >> 8), pid & 0xFF])
        out.append(head + (ss if index == 0 else b"") + chunk)
    return out


def vp9_is_keyframe(frame: bytes) -> bool:
    """VP9 uncompressed header (VP9 spec §6.2): frame_marker, profile, show_existing_frame, frame_type."""
    if not frame:
        return False
    b = frame[0]
    if b >> 6 != 0b10:
        return False
    profile = ((b >> 5) & 1) | (((b >> 4) & 1) << 1)
    bit = 4 if profile < 3 else 5  # profile 3 has a reserved zero bit
    show_existing = (b >> (bit - 1)) & 1
    if show_existing:
        return False
    return ((b >> (bit - 2)) & 1) == 0


# ---------------------------------------------------------------------------------------
# AV1

OBU_SEQUENCE_HEADER = 1
OBU_TEMPORAL_DELIMITER = 2
OBU_TILE_LIST = 8


def leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_leb128(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); AV1 spec §4.10.5 (at most 8 bytes)."""
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise ValueError("truncated leb128")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise ValueError("leb128 longer than 8 bytes")


def av1_obus(temporal_unit: bytes) -> list[bytes]:
    """OBUs of a low-overhead bitstream temporal unit (AV1 spec §5.2), each returned WITHOUT
    its size field (obu_has_size_field cleared), as the RTP format carries them."""
    out = []
    pos = 0
    while pos < len(temporal_unit):
        header = temporal_unit[pos]
        ext = (header >> 2) & 1
        has_size = (header >> 1) & 1
        head_len = 1 + ext
        head = bytes([header & ~0x02]) + temporal_unit[pos + 1 : pos + head_len]
        pos += head_len
        if has_size:
            size, pos = read_leb128(temporal_unit, pos)
        else:
            size = len(temporal_unit) - pos
        out.append(head + temporal_unit[pos : pos + size])
        pos += size
    return out


def av1_with_size_fields(obus: list[bytes], temporal_delimiter: bool = True) -> bytes:
    """The reverse of `av1_obus`: a low-overhead temporal unit a decoder accepts."""
    out = bytearray(b"\x12\x00" if temporal_delimiter else b"")
    for obu in obus:
        head_len = 1 + ((obu[0] >> 2) & 1)
        out += bytes([obu[0] | 0x02]) + obu[1:head_len] + leb128(len(obu) - head_len) + obu[head_len:]
    return bytes(out)


def av1_payloads(temporal_unit: bytes, max_payload: int) -> list[bytes]:
    """AV1 RTP §4.4: OBU elements (W=0, each with its LEB128 length), fragments across packets
    marked with Z (continues the previous packet's last element) and Y (continues in the next);
    N=1 on the first packet of a temporal unit that holds a sequence header (a new coded video
    sequence, §4.4 "N")."""
    obus = [
        o for o in av1_obus(temporal_unit)
        if (o[0] >> 3) & 0x0F not in (OBU_TEMPORAL_DELIMITER, OBU_TILE_LIST)
    ]
    new_sequence = any((o[0] >> 3) & 0x0F == OBU_SEQUENCE_HEADER for o in obus)
    packets: list[bytes] = []
    body = bytearray()
    z = False  # the packet being built starts with the rest of the previous packet's last OBU
    for obu in obus:
        rest = obu
        while rest:
            free = max_payload - 1 - len(body)  # after the aggregation header
            if free < 3:  # no room for a length and a byte: close this packet
                packets.append(bytes([0x80 if z else 0]) + bytes(body))
                body.clear()
                z = False
                continue
            size = free - len(leb128(free))
            piece, rest = rest[:size], rest[size:]
            body += leb128(len(piece)) + piece
            if rest:  # fragment: this packet ends with it (Y=1), the next starts with the rest (Z=1)
                packets.append(bytes([(0x80 if z else 0) | 0x40]) + bytes(body))
                body.clear()
                z = True
    if body or not packets:
        packets.append(bytes([0x80 if z else 0]) + bytes(body))
    if new_sequence:
        packets[0] = bytes([packets[0][0] | 0x08]) + packets[0][1:]
    return packets


# ---------------------------------------------------------------------------------------
# Opus

_OPUS_FRAME_US = (
    [10000, 20000, 40000, 60000] * 3  # SILK-only, configs 0..11
    + [10000, 20000] * 2  # hybrid, configs 12..15
    + [2500, 5000, 10000, 20000] * 4  # CELT-only, configs 16..31
)


def opus_samples(packet: bytes, rate: int = 48000) -> int:
    """Samples (per channel, at `rate`) in one Opus packet, from its TOC byte (RFC 6716 §3.1)."""
    if not packet:
        raise ValueError("empty Opus packet")
    toc = packet[0]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(packet) < 2:
            raise ValueError("Opus code 3 packet without a frame count")
        frames = packet[1] & 0x3F
    return frames * _OPUS_FRAME_US[toc >> 3] * rate // 1_000_000
