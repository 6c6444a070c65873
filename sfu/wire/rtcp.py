"""RTCP packets <-> values.

RFC 3550 (SR, RR, SDES, BYE, APP), RFC 4585 (generic NACK, PLI), RFC 5104 (FIR),
RFC 3611 (XR: RRTR, DLRR), draft-alvestrand-rmcat-remb (REMB),
draft-holmer-rmcat-transport-wide-cc-extensions-01 (transport-wide CC feedback).

`parse_compound(data)` returns a list of packet values (unknown types become `UnknownRtcp`,
malformed input raises `RtcpError(reason)`); `serialize(packets)` is its inverse.
Sequence numbers in NACK and TWCC values are the 16-bit wire values.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RTCP_VERSION = 2
PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204
PT_RTPFB = 205
PT_PSFB = 206
PT_XR = 207
FMT_NACK = 1  # RFC 4585 §6.2.1
FMT_TWCC = 15  # transport-wide-cc-extensions-01 §3.1
FMT_PLI = 1  # RFC 4585 §6.3.1
FMT_FIR = 4  # RFC 5104 §4.3.1
FMT_AFB = 15  # RFC 4585 §6.4 application layer feedback (REMB)
XR_RRTR = 4  # RFC 3611 §4.4
XR_DLRR = 5  # RFC 3611 §4.5

NTP_EPOCH_OFFSET_S = 2208988800  # 1900-01-01 to 1970-01-01
TWCC_DELTA_TICK_US = 250  # receive deltas are in multiples of 250 µs
TWCC_REFERENCE_TICK_US = 64000  # reference time is in multiples of 64 ms
TWCC_MAX_PACKET_SIZE = 1200  # bytes of one feedback packet the builder aims for
_TWCC_SIZE_SLACK = 16  # the size estimate is 2 bits per status; the last chunks may cost more

_HDR = struct.Struct("!BBH")
_II = struct.Struct("!II")


class RtcpError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    packets_lost: int  # signed 24-bit cumulative
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int


@dataclass(slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(slots=True)
class ReceiverReport:
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(slots=True)
class Sdes:
    chunks: list[tuple[int, list[tuple[int, bytes]]]]  # (ssrc, [(item type, value)])


@dataclass(slots=True)
class Bye:
    ssrcs: list[int]
    reason: bytes | None = None


@dataclass(slots=True)
class App:
    subtype: int
    ssrc: int
    name: bytes  # 4 ASCII bytes
    data: bytes


@dataclass(slots=True)
class Nack:
    sender_ssrc: int
    media_ssrc: int
    lost: list[int]  # 16-bit sequence numbers, in order across wrap


@dataclass(slots=True)
class Pli:
    sender_ssrc: int
    media_ssrc: int


@dataclass(slots=True)
class Fir:
    sender_ssrc: int
    entries: list[tuple[int, int]]  # (media ssrc, command sequence number)


@dataclass(slots=True)
class Remb:
    sender_ssrc: int
    bitrate: int  # bits per second
    ssrcs: list[int]


@dataclass(slots=True)
class TransportCc:
    """One transport-wide feedback packet.

    `packets` has one entry per sequence number from `base_sequence`, in order:
    (transport_seq, received, delta_us). delta_us (a multiple of 250) is relative to the
    previous received packet, or to reference_time * 64 ms for the first; None if lost.
    """

    sender_ssrc: int
    media_ssrc: int
    base_sequence: int
    reference_time: int  # 24-bit, 64 ms units
    fb_packet_count: int  # 8-bit
    packets: list[tuple[int, bool, int | None]]


@dataclass(slots=True)
class Rrtr:
    ntp_timestamp: int


@dataclass(slots=True)
class Dlrr:
    items: list[tuple[int, int, int]]  # (ssrc, lrr, dlrr) with dlrr in 1/65536 s


@dataclass(slots=True)
class XrBlock:
    block_type: int
    type_specific: int
    data: bytes


@dataclass(slots=True)
class ExtendedReport:
    ssrc: int
    blocks: list[Rrtr | Dlrr | XrBlock]


@dataclass(slots=True)
class UnknownRtcp:
    pt: int
    fmt: int
    data: bytes  # the packet body after the 4-byte header


RtcpPacket = (
    SenderReport | ReceiverReport | Sdes | Bye | App | Nack | Pli | Fir | Remb | TransportCc
    | ExtendedReport | UnknownRtcp
)


# --- helpers -----------------------------------------------------------------------------


def ntp_from_unix(seconds: float) -> int:
    """64-bit NTP timestamp (RFC 3550 §4) from Unix time in seconds."""
    return int(round((seconds + NTP_EPOCH_OFFSET_S) * (1 << 32))) & 0xFFFFFFFFFFFFFFFF


def ntp_middle_32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: what LSR/LRR carry (RFC 3550 §6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def rtt_from_report(now_ntp_middle32: int, lsr: int, dlsr: int) -> float | None:
    """RTT in seconds from a report block's LSR/DLSR (RFC 3550 §6.4.1); None when the
    block carries no LSR yet or the result is negative (clock trouble)."""
    if lsr == 0:
        return None
    rtt = (now_ntp_middle32 - lsr - dlsr) & 0xFFFFFFFF
    if rtt & 0x80000000:
        return None
    return rtt / 65536.0


def _header(fmt: int, pt: int, body_len: int, padding: bool = False) -> bytes:
    if body_len % 4:
        raise RtcpError("unaligned-body")
    return _HDR.pack(0x80 | (0x20 if padding else 0) | fmt, pt, body_len // 4)


# --- parsing -----------------------------------------------------------------------------


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a (compound or reduced-size) RTCP datagram (already decrypted)."""
    packets: list[RtcpPacket] = []
    pos = 0
    end = len(data)
    if end < 4:
        raise RtcpError("truncated")
    while pos < end:
        if end - pos < 4:
            raise RtcpError("truncated")
        first, pt, length = _HDR.unpack_from(data, pos)
        if first >> 6 != RTCP_VERSION:
            raise RtcpError("bad-version")
        size = 4 + length * 4
        if pos + size > end:
            raise RtcpError("truncated")
        body = data[pos + 4 : pos + size]
        if first & 0x20:  # RFC 3550 §6.4.1 padding: last octet counts padding bytes
            if not body or body[-1] == 0 or body[-1] > len(body):
                raise RtcpError("bad-padding")
            body = body[: -body[-1]]
        packets.append(_parse_one(first & 0x1F, pt, body))
        pos += size
    return packets


def _parse_one(fmt: int, pt: int, body: bytes) -> RtcpPacket:
    try:
        if pt == PT_SR:
            return _parse_sr(fmt, body)
        if pt == PT_RR:
            return _parse_rr(fmt, body)
        if pt == PT_SDES:
            return _parse_sdes(fmt, body)
        if pt == PT_BYE:
            return _parse_bye(fmt, body)
        if pt == PT_APP:
            ssrc = struct.unpack_from("!I", body)[0]
            if len(body) < 8:
                raise RtcpError("truncated-app")
            return App(fmt, ssrc, bytes(body[4:8]), bytes(body[8:]))
        if pt == PT_RTPFB:
            if fmt == FMT_NACK:
                return _parse_nack(body)
            if fmt == FMT_TWCC:
                return _parse_twcc(body)
        if pt == PT_PSFB:
            if fmt == FMT_PLI:
                sender, media = _II.unpack_from(body)
                return Pli(sender, media)
            if fmt == FMT_FIR:
                return _parse_fir(body)
            if fmt == FMT_AFB and body[8:12] == b"REMB":
                return _parse_remb(body)
        if pt == PT_XR:
            return _parse_xr(body)
    except struct.error:
        raise RtcpError(f"truncated-{pt}-{fmt}") from None
    return UnknownRtcp(pt, fmt, bytes(body))


def _parse_report_blocks(body: bytes, pos: int, count: int) -> list[ReportBlock]:
    if len(body) < pos + 24 * count:
        raise RtcpError("truncated-report-blocks")
    reports = []
    for _ in range(count):
        ssrc, lost_word, highest, jitter, lsr, dlsr = struct.unpack_from("!IIIIII", body, pos)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        reports.append(ReportBlock(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr))
        pos += 24
    return reports


def _parse_sr(count: int, body: bytes) -> SenderReport:
    ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body)
    return SenderReport(ssrc, ntp, rtp_ts, packets, octets, _parse_report_blocks(body, 24, count))


def _parse_rr(count: int, body: bytes) -> ReceiverReport:
    (ssrc,) = struct.unpack_from("!I", body)
    return ReceiverReport(ssrc, _parse_report_blocks(body, 4, count))


def _parse_sdes(count: int, body: bytes) -> Sdes:
    chunks = []
    pos = 0
    for _ in range(count):
        (ssrc,) = struct.unpack_from("!I", body, pos)
        pos += 4
        items = []
        while True:
            if pos >= len(body):
                raise RtcpError("truncated-sdes")
            item_type = body[pos]
            if item_type == 0:  # end of list, then pad to the next 32-bit boundary
                pos = (pos + 4) & ~3
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise RtcpError("truncated-sdes")
            item_len = body[pos + 1]
            items.append((item_type, bytes(body[pos + 2 : pos + 2 + item_len])))
            pos += 2 + item_len
        chunks.append((ssrc, items))
    return Sdes(chunks)


def _parse_bye(count: int, body: bytes) -> Bye:
    if len(body) < 4 * count:
        raise RtcpError("truncated-bye")
    ssrcs = list(struct.unpack_from(f"!{count}I", body))
    reason = None
    pos = 4 * count
    if pos < len(body):
        reason_len = body[pos]
        if pos + 1 + reason_len > len(body):
            raise RtcpError("truncated-bye")
        reason = bytes(body[pos + 1 : pos + 1 + reason_len])
    return Bye(ssrcs, reason)


def _parse_nack(body: bytes) -> Nack:
    sender, media = _II.unpack_from(body)
    lost = []
    for pos in range(8, len(body) - 3, 4):  # RFC 4585 §6.2.1: PID + BLP pairs
        pid, blp = struct.unpack_from("!HH", body, pos)
        lost.append(pid)
        for bit in range(16):
            if blp & (1 << bit):
                lost.append((pid + bit + 1) & 0xFFFF)
    return Nack(sender, media, lost)


def _parse_fir(body: bytes) -> Fir:
    (sender,) = struct.unpack_from("!I", body)  # media ssrc (body[4:8]) is unused: §4.3.1.2
    entries = []
    for pos in range(8, len(body) - 7, 8):
        ssrc, seqnr = struct.unpack_from("!IB", body, pos)
        entries.append((ssrc, seqnr))
    return Fir(sender, entries)


def _parse_remb(body: bytes) -> Remb:
    sender, word = struct.unpack_from("!I8xI", body)
    num = word >> 24
    exp = (word >> 18) & 0x3F
    mantissa = word & 0x3FFFF
    if len(body) < 16 + 4 * num:
        raise RtcpError("truncated-remb")
    ssrcs = list(struct.unpack_from(f"!{num}I", body, 16))
    return Remb(sender, mantissa << exp, ssrcs)


def _parse_xr(body: bytes) -> ExtendedReport:
    (ssrc,) = struct.unpack_from("!I", body)
    blocks: list[Rrtr | Dlrr | XrBlock] = []
    pos = 4
    while pos + 4 <= len(body):
        bt, specific, words = struct.unpack_from("!BBH", body, pos)
        content = body[pos + 4 : pos + 4 + 4 * words]
        if len(content) < 4 * words:
            raise RtcpError("truncated-xr")
        if bt == XR_RRTR and words == 2:
            blocks.append(Rrtr(struct.unpack("!Q", content)[0]))
        elif bt == XR_DLRR and words % 3 == 0:
            items = [struct.unpack_from("!III", content, i) for i in range(0, len(content), 12)]
            blocks.append(Dlrr([tuple(item) for item in items]))  # type: ignore[misc]
        else:
            blocks.append(XrBlock(bt, specific, bytes(content)))
        pos += 4 + 4 * words
    return ExtendedReport(ssrc, blocks)


# transport-wide CC: status symbols (§3.1.1)
SYMBOL_NOT_RECEIVED = 0
SYMBOL_SMALL_DELTA = 1
SYMBOL_LARGE_DELTA = 2


def _parse_twcc(body: bytes) -> TransportCc:
    sender, media, base, count, ref_word = struct.unpack_from("!IIHHI", body)
    reference_time = ref_word >> 8
    fb_count = ref_word & 0xFF
    symbols: list[int] = []
    pos = 16
    while len(symbols) < count:
        if pos + 2 > len(body):
            raise RtcpError("twcc-truncated-chunks")
        chunk = (body[pos] << 8) | body[pos + 1]
        pos += 2
        if chunk & 0x8000 == 0:  # run length chunk (§3.1.3)
            symbols.extend([(chunk >> 13) & 0x3] * (chunk & 0x1FFF))
        elif chunk & 0x4000 == 0:  # status vector, 14 one-bit symbols (§3.1.4)
            symbols.extend((chunk >> (13 - i)) & 0x1 for i in range(14))
        else:  # status vector, 7 two-bit symbols
            symbols.extend((chunk >> (12 - 2 * i)) & 0x3 for i in range(7))
    del symbols[count:]
    packets: list[tuple[int, bool, int | None]] = []
    for i, symbol in enumerate(symbols):
        seq = (base + i) & 0xFFFF
        if symbol == SYMBOL_NOT_RECEIVED:
            packets.append((seq, False, None))
        elif symbol == SYMBOL_SMALL_DELTA:
            if pos + 1 > len(body):
                raise RtcpError("twcc-truncated-deltas")
            packets.append((seq, True, body[pos] * TWCC_DELTA_TICK_US))
            pos += 1
        elif symbol == SYMBOL_LARGE_DELTA:
            if pos + 2 > len(body):
                raise RtcpError("twcc-truncated-deltas")
            (ticks,) = struct.unpack_from("!h", body, pos)
            packets.append((seq, True, ticks * TWCC_DELTA_TICK_US))
            pos += 2
        else:
            raise RtcpError("twcc-reserved-symbol")
    return TransportCc(sender, media, base, reference_time, fb_count, packets)


# --- serialising -------------------------------------------------------------------------


def serialize(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    return b"".join(serialize_one(p) for p in packets)


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _report_blocks(reports: list[ReportBlock]) -> bytes:
    if len(reports) > 31:
        raise RtcpError("too-many-report-blocks")
    return b"".join(
        struct.pack(
            "!IIIIII",
            r.ssrc,
            ((r.fraction_lost & 0xFF) << 24) | (r.packets_lost & 0xFFFFFF),
            r.highest_sequence,
            r.jitter,
            r.lsr,
            r.dlsr,
        )
        for r in reports
    )


def serialize_one(p: RtcpPacket) -> bytes:
    if isinstance(p, SenderReport):
        body = struct.pack(
            "!IQIII", p.ssrc, p.ntp_timestamp, p.rtp_timestamp, p.packet_count, p.octet_count
        ) + _report_blocks(p.reports)
        return _header(len(p.reports), PT_SR, len(body)) + body
    if isinstance(p, ReceiverReport):
        body = struct.pack("!I", p.ssrc) + _report_blocks(p.reports)
        return _header(len(p.reports), PT_RR, len(body)) + body
    if isinstance(p, Sdes):
        parts = []
        for ssrc, items in p.chunks:
            chunk = struct.pack("!I", ssrc)
            for item_type, value in items:
                if len(value) > 255:
                    raise RtcpError("sdes-item-too-long")
                chunk += struct.pack("!BB", item_type, len(value)) + value
            chunk += b"\0"  # end of list, padded to 32 bits (RFC 3550 §6.5)
            parts.append(_pad4(chunk))
        body = b"".join(parts)
        return _header(len(p.chunks), PT_SDES, len(body)) + body
    if isinstance(p, Bye):
        body = b"".join(struct.pack("!I", s) for s in p.ssrcs)
        if p.reason is not None:
            body = _pad4(body + bytes([len(p.reason)]) + p.reason)
        return _header(len(p.ssrcs), PT_BYE, len(body)) + body
    if isinstance(p, App):
        body = struct.pack("!I", p.ssrc) + p.name + p.data
        return _header(p.subtype, PT_APP, len(body)) + body
    if isinstance(p, Nack):
        body = _II.pack(p.sender_ssrc, p.media_ssrc) + b"".join(
            struct.pack("!HH", pid, blp) for pid, blp in nack_pairs(p.lost)
        )
        return _header(FMT_NACK, PT_RTPFB, len(body)) + body
    if isinstance(p, Pli):
        return _header(FMT_PLI, PT_PSFB, 8) + _II.pack(p.sender_ssrc, p.media_ssrc)
    if isinstance(p, Fir):
        body = _II.pack(p.sender_ssrc, 0) + b"".join(
            struct.pack("!IB3x", ssrc, seqnr & 0xFF) for ssrc, seqnr in p.entries
        )
        return _header(FMT_FIR, PT_PSFB, len(body)) + body
    if isinstance(p, Remb):
        exp = 0
        mantissa = p.bitrate
        while mantissa > 0x3FFFF:  # 18-bit mantissa, 6-bit exponent
            mantissa >>= 1
            exp += 1
        body = _II.pack(p.sender_ssrc, 0) + b"REMB" + struct.pack(
            "!I", (len(p.ssrcs) << 24) | (exp << 18) | mantissa
        ) + b"".join(struct.pack("!I", s) for s in p.ssrcs)
        return _header(FMT_AFB, PT_PSFB, len(body)) + body
    if isinstance(p, TransportCc):
        return _serialize_twcc(p)
    if isinstance(p, ExtendedReport):
        body = struct.pack("!I", p.ssrc)
        for block in p.blocks:
            if isinstance(block, Rrtr):
                body += struct.pack("!BBHQ", XR_RRTR, 0, 2, block.ntp_timestamp)
            elif isinstance(block, Dlrr):
                body += struct.pack("!BBH", XR_DLRR, 0, 3 * len(block.items))
                body += b"".join(struct.pack("!III", *item) for item in block.items)
            else:
                data = _pad4(block.data)
                body += struct.pack("!BBH", block.block_type, block.type_specific, len(data) // 4)
                body += data
        return _header(0, PT_XR, len(body)) + body
    if isinstance(p, UnknownRtcp):
        return _header(p.fmt, p.pt, len(p.data)) + p.data
    raise TypeError(f"not an RTCP packet: {p!r}")


def nack_pairs(lost: list[int]) -> list[tuple[int, int]]:
    """(PID, BLP) pairs for RFC 4585 §6.2.1, correct across the 65535 -> 0 wrap.

    The numbers are ordered along the shortest circular span (starting after the largest
    gap), so [65534, 65535, 0, 1] packs as one PID 65534 with BLP 0b111.
    """
    seqs = sorted({s & 0xFFFF for s in lost})
    if not seqs:
        return []
    gaps = [((seqs[(i + 1) % len(seqs)] - seqs[i]) & 0xFFFF, i) for i in range(len(seqs))]
    start = (max(gaps)[1] + 1) % len(seqs) if len(seqs) > 1 else 0
    ordered = seqs[start:] + seqs[:start]
    pairs: list[tuple[int, int]] = []
    pid = ordered[0]
    blp = 0
    for seq in ordered[1:]:
        diff = (seq - pid) & 0xFFFF
        if diff <= 16:
            blp |= 1 << (diff - 1)
        else:
            pairs.append((pid, blp))
            pid, blp = seq, 0
    pairs.append((pid, blp))
    return pairs


def _twcc_symbol(received: bool, delta_us: int | None) -> int:
    if not received:
        return SYMBOL_NOT_RECEIVED
    if delta_us is None:
        raise RtcpError("twcc-received-without-delta")
    ticks = delta_us // TWCC_DELTA_TICK_US
    return SYMBOL_SMALL_DELTA if 0 <= ticks <= 0xFF else SYMBOL_LARGE_DELTA


def _twcc_chunks(symbols: list[int]) -> list[int]:
    """Greedy chunk choice (§3.1.3-3.1.4): a run-length chunk for runs of 14 or more (or a
    run that ends the list), else a 1-bit vector of 14 when no large delta is among them,
    else a run-length chunk for 7+, else a 2-bit vector of 7. Trailing vector slots are
    zero-padded: the status count tells the reader where to stop."""
    chunks = []
    i = 0
    n = len(symbols)
    while i < n:
        run = 1
        while i + run < n and symbols[i + run] == symbols[i] and run < 0x1FFF:
            run += 1
        window14 = symbols[i : i + 14]
        if run >= 14 or i + run == n:
            chunks.append((symbols[i] << 13) | run)
            i += run
        elif SYMBOL_LARGE_DELTA not in window14:
            word = 0x8000
            for k, s in enumerate(window14):
                word |= s << (13 - k)
            chunks.append(word)
            i += len(window14)
        elif run >= 7:
            chunks.append((symbols[i] << 13) | run)
            i += run
        else:
            word = 0xC000
            for k, s in enumerate(symbols[i : i + 7]):
                word |= s << (12 - 2 * k)
            chunks.append(word)
            i += 7
    return chunks


def _serialize_twcc(p: TransportCc) -> bytes:
    symbols = []
    deltas = b""
    for _seq, received, delta_us in p.packets:
        symbol = _twcc_symbol(received, delta_us)
        symbols.append(symbol)
        if symbol == SYMBOL_SMALL_DELTA:
            deltas += bytes([delta_us // TWCC_DELTA_TICK_US])  # type: ignore[operator]
        elif symbol == SYMBOL_LARGE_DELTA:
            ticks = delta_us // TWCC_DELTA_TICK_US  # type: ignore[operator]
            if not -0x8000 <= ticks <= 0x7FFF:
                raise RtcpError("twcc-delta-out-of-range")
            deltas += struct.pack("!h", ticks)
    if len(symbols) > 0xFFFF:
        raise RtcpError("twcc-too-many-packets")
    body = struct.pack(
        "!IIHHI",
        p.sender_ssrc,
        p.media_ssrc,
        p.base_sequence & 0xFFFF,
        len(symbols),
        ((p.reference_time & 0xFFFFFF) << 8) | (p.fb_packet_count & 0xFF),
    )
    body += b"".join(struct.pack("!H", c) for c in _twcc_chunks(symbols)) + deltas
    pad = -len(body) % 4
    if pad:  # like libwebrtc: RTCP padding with the count in the last octet
        body += bytes(pad - 1) + bytes([pad])
    return _header(FMT_TWCC, PT_RTPFB, len(body), padding=bool(pad)) + body


def build_transport_cc(
    sender_ssrc: int,
    media_ssrc: int,
    arrivals: list[tuple[int, int | None]],
    fb_packet_count: int,
    max_size: int = TWCC_MAX_PACKET_SIZE,
) -> list[TransportCc]:
    """Feedback packets for consecutive transport sequence numbers.

    `arrivals` is [(transport_seq, arrival_time_us or None if lost)] in sequence order
    (sequence numbers may be extended; gaps are reported as lost). Arrival times are on
    any monotonic microsecond clock. A new feedback packet starts when one would exceed
    `max_size` bytes, when a delta does not fit 16 signed bits of 250 µs, or after 65535
    statuses. fb_packet_count increments (mod 256) per packet. Sequence numbers must be
    unwrapped (increasing); lost packets before the first received one are not reported.
    """
    result: list[TransportCc] = []
    if not arrivals:
        return result
    # expand gaps
    expanded: list[tuple[int, int | None]] = []
    for seq, arrival in arrivals:
        if expanded:
            for missing in range(expanded[-1][0] + 1, seq):
                expanded.append((missing, None))
        expanded.append((seq, arrival))
    while expanded and expanded[0][1] is None:  # a packet must start with a received one
        expanded.pop(0)

    current: TransportCc | None = None
    prev_ticks = 0
    size = 0.0
    count = fb_packet_count
    for seq, arrival in expanded:
        if arrival is None:
            # lost packets never open a feedback packet: they cost at most 2 bits each
            if current is not None and len(current.packets) < 0xFFFF:
                current.packets.append((seq & 0xFFFF, False, None))
                size += 0.25
            continue
        ticks = arrival // TWCC_DELTA_TICK_US
        if current is not None:
            delta = ticks - prev_ticks
            cost = 0.25 + (1 if 0 <= delta <= 0xFF else 2)
            if (
                -0x8000 <= delta <= 0x7FFF
                and size + cost <= max_size - _TWCC_SIZE_SLACK
                and len(current.packets) < 0xFFFF
            ):
                current.packets.append((seq & 0xFFFF, True, delta * TWCC_DELTA_TICK_US))
                size += cost
                prev_ticks = ticks
                continue
        reference = arrival // TWCC_REFERENCE_TICK_US
        first_delta = ticks - reference * (TWCC_REFERENCE_TICK_US // TWCC_DELTA_TICK_US)
        current = TransportCc(
            sender_ssrc,
            media_ssrc,
            seq & 0xFFFF,
            reference & 0xFFFFFF,
            count & 0xFF,
            [(seq & 0xFFFF, True, first_delta * TWCC_DELTA_TICK_US)],
        )
        count += 1
        result.append(current)
        size = 20 + 0.25 + 1
        prev_ticks = ticks
    return result
