"""RTP payloads back into encoded frames a decoder accepts, and the reassembly of a video
stream's packets into frames.

Depacketisers (pure; the reverse of `packetize`): H.264 (RFC 6184 single NAL, STAP-A, FU-A;
out: Annex-B), VP8 (RFC 7741 §4.2), VP9 (RFC 9628 §4.2, flexible and non-flexible, with or
without a scalability structure), AV1 (AV1 RTP §4; out: a low-overhead temporal unit with a
temporal delimiter and OBU size fields, AV1 spec §5.2), Opus (RFC 7587, the payload itself).

`FrameAssembler` is driven by `push(ext_seq, ts, marker, payload, now)` (one call per RTP packet,
sequence numbers already unwrapped, duplicates already removed) and `expire(now)`; both return the
frames completed, in decode order. A frame is the packets of one timestamp with consecutive
sequence numbers, closed by the marker bit (or by the next timestamp). Packets may arrive out of
order: a gap is waited for `loss_wait_s` (a NACK may repair it), then the frames it breaks are
dropped and counted, and reassembly restarts at the next keyframe (`want_keyframe` turns True
until then, so the owner can send a PLI).
"""

from __future__ import annotations

from dataclasses import dataclass

from sfu.testing import packetize

LOSS_WAIT_S = 0.6  # a gap's repair window: the viewer NACKs for ~0.5 s (10 tries x 50 ms)
MAX_PENDING_PACKETS = 4096  # a stream that never completes a frame: give up on the oldest


@dataclass(slots=True)
class EncodedFrame:
    """One reassembled frame: `data` is what the codec's decoder takes."""

    kind: str  # "video" or "audio"
    codec: str  # "H264", "VP8", "VP9", "AV1", "OPUS"
    rtp_timestamp: int
    data: bytes
    keyframe: bool
    packets: int
    received_at: float  # the client's loop time when its last packet arrived


class Depacketizer:
    """One codec's payload rules."""

    codec = ""

    def is_keyframe_start(self, payload: bytes) -> bool:
        """The first packet of a keyframe: reassembly may (re)start here."""
        raise NotImplementedError

    def frame(self, payloads: list[bytes]) -> tuple[bytes, bool]:
        """(decoder input, is keyframe) for the payloads of one frame, in order; ValueError if malformed."""
        raise NotImplementedError


class H264Depacketizer(Depacketizer):
    codec = "H264"

    def is_keyframe_start(self, payload: bytes) -> bool:
        if not payload:
            return False
        nal_type = payload[0] & 0x1F
        if nal_type in (packetize.NAL_TYPE_SPS, packetize.NAL_TYPE_IDR):
            return True
        if nal_type == packetize.STAP_A:
            return len(payload) > 3 and payload[3] & 0x1F in (packetize.NAL_TYPE_SPS, packetize.NAL_TYPE_IDR)
        if nal_type == packetize.FU_A:
            return len(payload) > 1 and payload[1] & 0x80 != 0 and payload[1] & 0x1F == packetize.NAL_TYPE_IDR
        return False

    def nalus(self, payloads: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        fragment: bytearray | None = None
        for payload in payloads:
            if not payload:
                raise ValueError("empty H.264 payload")
            nal_type = payload[0] & 0x1F
            if 1 <= nal_type <= 23:
                out.append(payload)
            elif nal_type == packetize.STAP_A:  # RFC 6184 §5.7.1
                pos = 1
                while pos + 2 <= len(payload):
                    size = int.from_bytes(payload[pos : pos + 2], "big")
                    if size == 0 or pos + 2 + size > len(payload):
                        raise ValueError("STAP-A unit past the end")
                    out.append(payload[pos + 2 : pos + 2 + size])
                    pos += 2 + size
            elif nal_type == packetize.FU_A:  # RFC 6184 §5.8
                if len(payload) < 2:
                    raise ValueError("short FU-A")
                fu = payload[1]
                if fu & 0x80:
                    fragment = bytearray([(payload[0] & 0xE0) | (fu & 0x1F)])
                elif fragment is None:
                    raise ValueError("FU-A continuation without a start")
                fragment += payload[2:]
                if fu & 0x40:
                    out.append(bytes(fragment))
                    fragment = None
            else:
                raise ValueError(f"unsupported H.264 packet type {nal_type}")
        if fragment is not None:
            raise ValueError("FU-A without an end")
        return out

    def frame(self, payloads: list[bytes]) -> tuple[bytes, bool]:
        nalus = self.nalus(payloads)
        keyframe = any(n[0] & 0x1F == packetize.NAL_TYPE_IDR for n in nalus)
        return b"".join(b"\x00\x00\x00\x01" + n for n in nalus), keyframe


def vp8_descriptor_length(payload: bytes) -> int:
    """RFC 7741 §4.2: bytes of payload descriptor before the VP8 payload."""
    if not payload:
        raise ValueError("empty VP8 payload")
    pos = 1
    if payload[0] & 0x80:  # X
        if len(payload) < 2:
            raise ValueError("short VP8 descriptor")
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture ID, 7 or 15 bits
            if pos >= len(payload):
                raise ValueError("short VP8 descriptor")
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
    if pos > len(payload):
        raise ValueError("short VP8 descriptor")
    return pos


class Vp8Depacketizer(Depacketizer):
    codec = "VP8"

    def is_keyframe_start(self, payload: bytes) -> bool:
        try:
            pos = vp8_descriptor_length(payload)
        except ValueError:
            return False
        start = payload[0] & 0x10 and payload[0] & 0x07 == 0
        return bool(start) and pos < len(payload) and not payload[pos] & 0x01

    def frame(self, payloads: list[bytes]) -> tuple[bytes, bool]:
        data = b"".join(p[vp8_descriptor_length(p) :] for p in payloads)
        return data, packetize.vp8_is_keyframe(data)


def vp9_descriptor_length(payload: bytes) -> int:
    """RFC 9628 §4.2: bytes of payload descriptor (and scalability structure) before the VP9 data."""
    if not payload:
        raise ValueError("empty VP9 payload")
    b0 = payload[0]
    pos = 1
    try:
        if b0 & 0x80:  # I
            pos += 2 if payload[pos] & 0x80 else 1
        if b0 & 0x20:  # L: TID/U/SID/D, then TL0PICIDX in non-flexible mode
            pos += 1 if b0 & 0x10 else 2
        if b0 & 0x10 and b0 & 0x40:  # F and P: up to 3 P_DIFF bytes, N bit continues
            for _ in range(3):
                more = payload[pos] & 0x01
                pos += 1
                if not more:
                    break
        if b0 & 0x02:  # V: scalability structure (§4.2.1)
            ss = payload[pos]
            pos += 1
            spatial = (ss >> 5) + 1
            if ss & 0x10:  # Y: sizes
                pos += 4 * spatial
            if ss & 0x08:  # G: picture group
                groups = payload[pos]
                pos += 1
                for _ in range(groups):
                    refs = (payload[pos] >> 2) & 0x03
                    pos += 1 + refs
    except IndexError:
        raise ValueError("short VP9 descriptor") from None
    if pos > len(payload):
        raise ValueError("short VP9 descriptor")
    return pos


class Vp9Depacketizer(Depacketizer):
    codec = "VP9"

    def is_keyframe_start(self, payload: bytes) -> bool:
        return bool(payload) and payload[0] & 0x08 != 0 and payload[0] & 0x40 == 0  # B, not P

    def frame(self, payloads: list[bytes]) -> tuple[bytes, bool]:
        data = b"".join(p[vp9_descriptor_length(p) :] for p in payloads)
        return data, bool(payloads) and not payloads[0][0] & 0x40


class Av1Depacketizer(Depacketizer):
    codec = "AV1"

    def is_keyframe_start(self, payload: bytes) -> bool:
        return bool(payload) and payload[0] & 0x08 != 0 and payload[0] & 0x80 == 0  # N, not Z

    def obus(self, payloads: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        fragment = bytearray()
        for index, payload in enumerate(payloads):
            if not payload:
                raise ValueError("empty AV1 payload")
            header = payload[0]
            z, y, w = header & 0x80, header & 0x40, (header >> 4) & 0x03
            pos = 1
            elements: list[bytes] = []
            while pos < len(payload):
                if w and len(elements) == w - 1:
                    size = len(payload) - pos  # the last of W elements has no length
                else:
                    size, pos = packetize.read_leb128(payload, pos)
                if pos + size > len(payload):
                    raise ValueError("AV1 OBU element past the end")
                elements.append(payload[pos : pos + size])
                pos += size
            for number, element in enumerate(elements):
                continues = number == 0 and z
                if continues and not fragment and index == 0:
                    raise ValueError("AV1 frame starts with a continuation")
                if not continues and fragment:
                    raise ValueError("AV1 fragment not continued")
                fragment += element
                if number == len(elements) - 1 and y:
                    continue  # continued in the next packet
                if fragment:
                    out.append(bytes(fragment))
                fragment = bytearray()
        if fragment:
            raise ValueError("AV1 frame ends inside an OBU")
        return out

    def frame(self, payloads: list[bytes]) -> tuple[bytes, bool]:
        obus = self.obus(payloads)
        keyframe = any((o[0] >> 3) & 0x0F == packetize.OBU_SEQUENCE_HEADER for o in obus)
        return packetize.av1_with_size_fields(obus), keyframe


DEPACKETIZERS: dict[str, type[Depacketizer]] = {
    "H264": H264Depacketizer, "VP8": Vp8Depacketizer, "VP9": Vp9Depacketizer, "AV1": Av1Depacketizer,
}


class FrameAssembler:
    """Packets of one video RTP stream in, complete encoded frames out (see the module docstring)."""

    def __init__(self, codec: str, loss_wait_s: float = LOSS_WAIT_S) -> None:
        if codec.upper() not in DEPACKETIZERS:
            raise ValueError(f"no depacketizer for {codec!r}")
        self.depacketizer = DEPACKETIZERS[codec.upper()]()
        self.codec = self.depacketizer.codec
        self.loss_wait_s = loss_wait_s
        self._pending: dict[int, tuple[int, bool, bytes, float]] = {}  # ext seq -> ts, marker, payload, at
        self._next_seq: int | None = None  # first sequence number of the next frame; None: out of sync
        self._gap_since: float | None = None
        self.want_keyframe = True  # out of sync: waiting for a keyframe
        self.frames = 0
        self.keyframes = 0
        self.frames_dropped = 0  # frames broken by a loss that was not repaired in time
        self.malformed = 0  # frames whose payloads did not parse (dropped)
        self.packets_too_late = 0  # arrived after their frame was given up or emitted
        self.packets_before_keyframe = 0  # discarded while waiting for a keyframe to start from

    def push(self, ext_seq: int, ts: int, marker: bool, payload: bytes, now: float) -> list[EncodedFrame]:
        if self._next_seq is not None and ext_seq < self._next_seq:
            self.packets_too_late += 1
            return []
        self._pending[ext_seq] = (ts, marker, payload, now)
        return self._drain(now)

    def expire(self, now: float) -> list[EncodedFrame]:
        """Give up on gaps older than `loss_wait_s` (call when no packet arrives for a while)."""
        return self._drain(now) if self._pending else []

    def _drain(self, now: float) -> list[EncodedFrame]:
        out: list[EncodedFrame] = []
        pending = self._pending
        while pending:
            if self._next_seq is None and not self._resync():
                break
            seq = self._next_seq
            assert seq is not None
            parts: list[int] = []
            complete = False
            if seq in pending:
                ts = pending[seq][0]
                s = seq
                while s in pending and pending[s][0] == ts:
                    parts.append(s)
                    if pending[s][1]:
                        complete = True
                        break
                    s += 1
                if not complete and s in pending:  # next timestamp without a marker: frame ends
                    complete = True
            if complete:
                self._gap_since = None
                out.extend(self._emit(parts))
                continue
            missing = seq + len(parts)
            if not any(k > missing for k in pending):
                break  # nothing after the hole yet: just waiting for packets
            if self._gap_since is None:
                self._gap_since = now
            if now - self._gap_since < self.loss_wait_s and len(pending) < MAX_PENDING_PACKETS:
                break
            self._give_up()
        return out

    def _emit(self, parts: list[int]) -> list[EncodedFrame]:
        entries = [self._pending.pop(s) for s in parts]
        self._next_seq = parts[-1] + 1
        try:
            data, keyframe = self.depacketizer.frame([e[2] for e in entries])
        except ValueError:
            self.malformed += 1
            self._next_seq = None
            self.want_keyframe = True
            return []
        self.frames += 1
        self.keyframes += keyframe
        return [EncodedFrame("video", self.codec, entries[0][0], data, keyframe, len(entries), entries[-1][3])]

    def _give_up(self) -> None:
        """The gap at `_next_seq` was not repaired: drop up to the next keyframe."""
        self._gap_since = None
        broken = {ts for ts, *_ in self._pending.values()}
        self._next_seq = None
        self.want_keyframe = True
        self._resync()
        left = {ts for ts, *_ in self._pending.values()}
        self.frames_dropped += max(1, len(broken - left))

    def _resync(self) -> bool:
        """Start at the oldest keyframe start pending, discarding what comes before it."""
        starts = [s for s, e in self._pending.items() if self.depacketizer.is_keyframe_start(e[2])]
        if not starts:
            if len(self._pending) >= MAX_PENDING_PACKETS:
                oldest = min(self._pending)
                del self._pending[oldest]
                self.packets_before_keyframe += 1
            return False
        first = min(starts)
        for s in [s for s in self._pending if s < first]:
            del self._pending[s]
            self.packets_before_keyframe += 1
        self._next_seq = first
        self.want_keyframe = False
        return True
