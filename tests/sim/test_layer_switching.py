"""Simulcast layers through the real fast path, on a fake clock: ranking by what the keyframes
carry (never by rid), clean switches (continuous sequence numbers, monotonic timestamps aligned by
sender reports, VP8 picture id continuity, switch only at the target's keyframe), padding probes."""

from __future__ import annotations

import random
import socket
import struct

import pytest

from sfu import _fastpath
from sfu._fastpath import InStream, OutTrack, Router, SrtpContext, srtp_key_lengths
from sfu.core.layers import LayerMeter, rank, timestamp_hint
from sfu.wire.codecs import h264_sps_resolution
from sfu.core.stream import SenderReportInfo
from sfu.testing import media
from sfu.wire import rtcp

GCM = _fastpath.SRTP_AEAD_AES_128_GCM


class Rig:
    """A Router on a loopback socket with one viewer endpoint whose datagrams we read back."""

    def __init__(self) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.server.bind(("127.0.0.1", 0))
        self.viewer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.viewer.bind(("127.0.0.1", 0))
        self.viewer.settimeout(1.0)
        self.router = Router(self.server.fileno(), socket.AF_INET)
        rng = random.Random(7)
        key_len, salt_len = srtp_key_lengths(GCM)
        key, salt = rng.randbytes(key_len), rng.randbytes(salt_len)
        self.ep = _fastpath.Endpoint()
        self.ep.set_srtp(SrtpContext(GCM, key, salt), SrtpContext(GCM, key, salt))
        self.unprotect = SrtpContext(GCM, key, salt)
        self.router.set_path(self.ep, self.viewer.getsockname())
        self.now = 100.0

    def close(self) -> None:
        self.server.close()
        self.viewer.close()

    def receive(self, count: int) -> list[bytes]:
        return [self.unprotect.unprotect(self.viewer.recv(2048)) for _ in range(count)]

    def drain(self) -> list[bytes]:
        out = []
        self.viewer.settimeout(0.05)
        try:
            while True:
                out.append(self.unprotect.unprotect(self.viewer.recv(2048)))
        except TimeoutError:
            pass
        self.viewer.settimeout(1.0)
        return out


class Source:
    """One simulcast layer of a synthetic VP8 publisher."""

    def __init__(self, rig: Rig, ssrc: int, width: int, height: int, bitrate: int, index: int) -> None:
        self.rig, self.ssrc, self.width, self.height, self.bitrate, self.index = rig, ssrc, width, height, bitrate, index
        self.stream = InStream(None, ssrc, _fastpath.CODEC_VP8, 96, 90000)
        self.seq = random.Random(ssrc).getrandbits(16)
        self.ts_base = random.Random(ssrc + 1).getrandbits(32)
        self.picture_id = random.Random(ssrc + 2).getrandbits(15)
        self.frames = 0

    def ts(self, frame: int) -> int:
        return (self.ts_base + frame * 3000) & 0xFFFFFFFF

    def frame(self, keyframe: bool) -> None:
        payloads = media.vp8_frame_payloads(
            keyframe=keyframe, width=self.width, height=self.height, picture_id=self.picture_id,
            frame_bytes=max(1, self.bitrate // 8 // 30), max_payload=1100,
            probe_bytes=media.probe(0, self.frames, self.index),
        )
        for i, payload in enumerate(payloads):
            self.seq = (self.seq + 1) & 0xFFFF
            packet = media.rtp_header(96, self.seq, self.ts(self.frames), self.ssrc, i == len(payloads) - 1) + payload
            self.rig.router.inject(self.stream, packet, self.rig.now)
        self.picture_id = (self.picture_id + 1) & 0x7FFF
        self.frames += 1

    def sender_report(self, wall: float) -> SenderReportInfo:
        """What this layer's SR says at `wall`: every layer's clock runs from the same capture time."""
        return SenderReportInfo(rtcp.ntp_from_unix(wall), self.ts(self.frames), 0.0)


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def _header(packet: bytes) -> tuple[int, int, int]:
    _b0, _b1, seq, ts, ssrc = struct.unpack_from("!BBHII", packet)
    return seq, ts, ssrc


def _vp8_picture_id(packet: bytes) -> int | None:
    payload = packet[12:]
    if payload[0] & 0x80 and payload[1] & 0x80:
        return ((payload[2] & 0x7F) << 8) | payload[3] if payload[2] & 0x80 else payload[2] & 0x7F
    return None


@pytest.mark.parametrize("rids,seed", [(["q", "h", "f"], 1), (["q", "h", "f"], 2), (["0", "1", "2"], 3), (["0", "1", "2"], 4)])
def test_layers_ranked_by_keyframe_resolution_not_rid(rig: Rig, rids: list[str], seed: int) -> None:
    plans = media.plan_layers(rids, 1_200_000)  # browser: q smallest; OBS: "0" largest
    random.Random(seed).shuffle(plans)  # layers appear (and are bound) in any order
    sources = [Source(rig, 1000 + i, p.width, p.height, p.bitrate, p.index) for i, p in enumerate(plans)]
    meters = {s.ssrc: LayerMeter(s.stream, "VP8") for s in sources}
    for step in range(20):
        for s in sources:
            s.frame(keyframe=step == 0)
        rig.now += 1 / 30
        for m in meters.values():
            m.sample(rig.now)
    ranked = rank(list(meters.values()))
    heights = [m.height for m in ranked]
    assert heights == sorted(heights) and heights[-1] == 720 and heights[0] == 180
    top_rid = next(p.rid for p, s in zip(plans, sources, strict=False) if meters[s.ssrc] is ranked[-1])
    assert top_rid == ("0" if rids[0].isdigit() else "f")


def test_layers_without_size_are_ranked_by_measured_bitrate(rig: Rig) -> None:
    streams = {rate: InStream(None, 2000 + i, _fastpath.CODEC_AV1, 45, 90000) for i, rate in enumerate((900, 100, 300))}
    meters = {rate: LayerMeter(st, "AV1") for rate, st in streams.items()}
    for step in range(30):
        for rate, st in streams.items():
            packet = media.rtp_header(45, step, step * 3000, st.ssrc, True) + b"\x10" + bytes(rate)
            rig.router.inject(st, packet, rig.now)
        rig.now += 0.05
        for m in meters.values():
            m.sample(rig.now)
    assert [m.stream.ssrc for m in rank(list(meters.values()))] == [2001, 2002, 2000]


def test_h264_sps_resolution_parsed_from_the_keyframe(rig: Rig) -> None:
    for width, height in ((1280, 720), (640, 360), (320, 180), (1920, 1080)):
        assert h264_sps_resolution(media.h264_sps(width, height)) == (width, height)
    st = InStream(None, 3000, _fastpath.CODEC_H264, 102, 90000)
    payloads = media.h264_frame_payloads(keyframe=True, width=640, height=360, frame_bytes=3000,
                                         max_payload=1100, probe_bytes=media.probe(0, 0, 1))
    for i, payload in enumerate(payloads):
        rig.router.inject(st, media.rtp_header(102, i, 0, 3000, i == len(payloads) - 1) + payload, rig.now)
    meter = LayerMeter(st, "H264")
    meter.sample(rig.now)
    assert (meter.width, meter.height) == (640, 360)


def test_switch_waits_for_the_keyframe_and_keeps_numbers_continuous(rig: Rig) -> None:
    low = Source(rig, 11, 320, 180, 150_000, 0)
    high = Source(rig, 22, 1280, 720, 1_200_000, 2)
    out = OutTrack(rig.ep, 0xABCDEF, 100, 90000, True, 5000, 77777)
    _fastpath.set_source(out, low.stream)
    low.stream.add(out)
    wall = 1_700_000_000.0
    received: list[bytes] = []
    for step in range(10):
        low.frame(keyframe=step == 0)
        high.frame(keyframe=step == 0)
        rig.now += 1 / 30
        wall += 1 / 30
    received += rig.drain()
    assert received and all(_header(p)[2] == 0xABCDEF for p in received)
    # switch up: the SR hint maps the high layer's clock onto the low one's
    hint = timestamp_hint(low.sender_report(wall), high.sender_report(wall), 90000, out.ts_offset)
    _fastpath.switch_source(out, high.stream, hint)
    high.stream.add(out)
    for _ in range(5):  # the high layer sends delta frames: the low layer keeps flowing
        low.frame(keyframe=False)
        high.frame(keyframe=False)
        rig.now += 1 / 30
    before = rig.drain()
    assert before and all(media.find_probe(p, 12)[2] == 0 for p in before)
    assert _fastpath.source_state(out)["switch_waits"] > 0 and _fastpath.source_state(out)["pending"]
    high.frame(keyframe=True)  # the switch point
    low.frame(keyframe=False)  # no longer forwarded
    for _ in range(5):
        high.frame(keyframe=False)
        low.frame(keyframe=False)
        rig.now += 1 / 30
    after = rig.drain()
    assert _fastpath.is_current_source(out, high.stream)
    state = _fastpath.source_state(out)
    assert state["switches"] == 1 and state["ts_from_hint"] == 1 and not state["pending"]
    assert media.vp8_is_keyframe(after[0][12:])[0], "the first packet after the switch starts a keyframe"
    assert all(media.find_probe(p, 12)[2] == 2 for p in after)
    stream = received + before + after
    seqs = [_header(p)[0] for p in stream]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False)), "one continuous sequence"
    stamps = [_header(p)[1] for p in stream]
    assert all(0 <= (b - a) & 0xFFFFFFFF < 90000 for a, b in zip(stamps, stamps[1:], strict=False)), "monotonic timestamps"
    # frame spacing is kept across the switch: the SR hint put the keyframe one frame after the last
    last_low_ts, first_high_ts = _header(before[-1])[1], _header(after[0])[1]
    assert (first_high_ts - last_low_ts) & 0xFFFFFFFF == 3000
    pictures = [pid for pid in (_vp8_picture_id(p) for p in stream) if pid is not None]
    frame_starts = [pictures[0]] + [b for a, b in zip(pictures, pictures[1:], strict=False) if b != a]
    assert all((b - a) & 0x7FFF == 1 for a, b in zip(frame_starts, frame_starts[1:], strict=False)), "picture ids continue"


def test_switch_without_sender_reports_aligns_on_arrival_time(rig: Rig) -> None:
    low = Source(rig, 33, 320, 180, 150_000, 0)
    high = Source(rig, 44, 1280, 720, 1_200_000, 2)
    out = OutTrack(rig.ep, 0x1234, 100, 90000, True, 65530, 0xFFFFFF00)  # both numbers about to wrap
    _fastpath.set_source(out, low.stream)
    low.stream.add(out)
    for step in range(4):
        low.frame(keyframe=step == 0)
        rig.now += 1 / 30
    _fastpath.switch_source(out, high.stream, None)
    high.stream.add(out)
    rig.now += 1 / 30
    high.frame(keyframe=True)
    stream = rig.drain()
    assert _fastpath.source_state(out)["ts_from_arrival"] >= 1
    seqs = [_header(p)[0] for p in stream]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    stamps = [_header(p)[1] for p in stream]
    assert all(0 <= (b - a) & 0xFFFFFFFF < 9000 for a, b in zip(stamps, stamps[1:], strict=False))


def test_padding_probe_after_a_frame_keeps_sequence_continuous(rig: Rig) -> None:
    src = Source(rig, 55, 640, 360, 500_000, 1)
    out = OutTrack(rig.ep, 0x55, 100, 90000, True, 100, 1000)
    out.twcc_id = 3
    _fastpath.set_source(out, src.stream)
    src.stream.add(out)
    src.frame(keyframe=True)
    _fastpath.add_padding(out, 2000)
    src.frame(keyframe=False)
    src.frame(keyframe=False)
    stream = rig.drain()
    padding = [p for p in stream if p[0] & 0x20 and len(p) - 12 <= 300]
    assert len(padding) >= 7 and _fastpath.source_state(out)["pad_packets"] == len(padding)
    seqs = [_header(p)[0] for p in stream]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    # every packet (media and padding) is in the send log under its transport-wide number
    sent = _fastpath.sent_packets(rig.ep, 0, rig.ep.twcc_next)
    assert len(sent) == len(stream) and all(s is not None for s in sent)
    assert sum(1 for s in sent if s[2] & _fastpath.SEND_FLAG_PADDING) == len(padding)
