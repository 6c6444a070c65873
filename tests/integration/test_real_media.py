"""Real media through the test clients and the server: files encoded here with PyAV (pictures
that carry their frame number, a tone), published by `FilePublisher` without re-encoding,
reassembled and decoded by `PacketViewer(decode=True)`, compared with the source.

First the RTP packetisers and the frame assembler alone (no sockets), then through `sfu.Server`
with the plugin's fixtures (this repository's tests use its own pytest plugin).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import struct

import pytest

import av  # the `test` extra installs it (PyAV)

from sfu.testing import packetize, testmedia  # noqa: E402
from sfu.testing.depacketize import FrameAssembler  # noqa: E402
from sfu.testing.file_publisher import read_tracks  # noqa: E402

FILES = {"H264": "mp4", "VP8": "webm", "VP9": "webm", "AV1": "mkv"}
FRAMES = 45
FPS = 30


def _payloads(track, index: int, max_payload: int, picture_id: int) -> list[bytes]:
    frame = track.rtp_frame(index)
    keyframe = track.frames[index][2]
    if track.codec == "H264":
        return packetize.h264_payloads(frame, max_payload)
    if track.codec == "VP8":
        return packetize.vp8_payloads(frame, picture_id, max_payload)
    if track.codec == "VP9":
        return packetize.vp9_payloads(frame, picture_id, max_payload, keyframe=keyframe,
                                      width=track.width, height=track.height)
    return packetize.av1_payloads(frame, max_payload)


def _rtp_packets(track, max_payload: int) -> list[tuple[int, int, bool, bytes]]:
    """(seq, ts, marker, payload) for every frame of `track`, in sending order."""
    out = []
    seq = 1000
    for index in range(len(track.frames)):
        payloads = _payloads(track, index, max_payload, index)
        ts = round(track.frames[index][0] * 90000)
        for number, payload in enumerate(payloads):
            assert len(payload) <= max_payload
            out.append((seq, ts, number == len(payloads) - 1, payload))
            seq += 1
    return out


def _decode_all(codec: str, frames: list[bytes]) -> list:
    decoder = av.CodecContext.create({"H264": "h264", "VP8": "vp8", "VP9": "vp9", "AV1": "libdav1d"}[codec], "r")
    pictures = []
    for data in frames:
        pictures += decoder.decode(av.Packet(data))
    pictures += decoder.decode(None)
    return pictures


def _source_pictures(path) -> list:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


@pytest.mark.parametrize("codec", list(FILES))
@pytest.mark.parametrize("max_payload", [1100, 200])
def test_packetizers_and_assembler_round_trip_with_reordering(codec: str, max_payload: int, tmp_path) -> None:
    path = testmedia.make_test_file(tmp_path / f"clip.{FILES[codec]}", video=codec, audio=False,
                                    frames=FRAMES, gop=15)
    track, _ = read_tracks(path)
    assert track is not None and track.codec == codec and len(track.frames) == FRAMES
    packets = _rtp_packets(track, max_payload)
    assert len(packets) > FRAMES  # some frames span several packets at both sizes
    # reorder within windows of 6 packets (seeded), as a jittery network would
    rng = random.Random(7)
    shuffled = []
    for start in range(0, len(packets), 6):
        window = packets[start : start + 6]
        rng.shuffle(window)
        shuffled += window
    assembler = FrameAssembler(codec)
    frames = []
    for step, (seq, ts, marker, payload) in enumerate(shuffled):
        frames += assembler.push(seq, ts, marker, payload, step * 0.001)
    assert [f.rtp_timestamp for f in frames] == sorted({p[1] for p in packets})
    assert [f.keyframe for f in frames] == [i % 15 == 0 for i in range(FRAMES)]
    assert assembler.frames_dropped == assembler.malformed == 0
    pictures = _decode_all(codec, [f.data for f in frames])
    assert [testmedia.frame_number(p) for p in pictures] == list(range(FRAMES))
    # same bitstream in, same pictures out: the RTP round trip lost nothing
    source = _source_pictures(path)
    assert max(testmedia.luma_difference(a, b) for a, b in zip(pictures, source, strict=True)) == 0


def test_assembler_waits_for_a_repair_then_gives_up_and_restarts_at_a_keyframe(tmp_path) -> None:
    path = testmedia.make_test_file(tmp_path / "clip.webm", video="VP8", audio=False, frames=30, gop=10)
    track, _ = read_tracks(path)
    packets = _rtp_packets(track, 300)
    frame_of = {}  # seq -> frame index
    seq_by_frame: dict[int, list[int]] = {}
    for seq, ts, _, _ in packets:
        index = round(ts / 3000)
        frame_of[seq] = index
        seq_by_frame.setdefault(index, []).append(seq)
    lost_late = seq_by_frame[3][-1]  # repaired within the wait: frame 3 comes out late, not lost
    lost_for_good = seq_by_frame[14][0]  # never comes: frames 14..19 are dropped, 20 is a keyframe
    assembler = FrameAssembler("VP8", loss_wait_s=0.5)
    out = []
    now = 0.0
    for seq, ts, marker, payload in packets:
        now = frame_of[seq] / FPS
        if seq in (lost_late, lost_for_good):
            continue
        out += assembler.push(seq, ts, marker, payload, now)
        if frame_of[seq] == 6 and seq == seq_by_frame[6][0]:  # the NACKed packet arrives 0.1 s late
            entry = next(p for p in packets if p[0] == lost_late)
            out += assembler.push(entry[0], entry[1], entry[2], entry[3], now)
        if frame_of[seq] == 16:
            assert not assembler.want_keyframe  # still inside the repair window
    out += assembler.expire(now + 1.0)
    numbers = [round(f.rtp_timestamp / 3000) for f in out]
    assert numbers == list(range(0, 14)) + list(range(20, 30))
    assert assembler.frames_dropped == 6
    assert not assembler.want_keyframe  # resumed at frame 20's keyframe
    assert out[14].keyframe
    pictures = _decode_all("VP8", [f.data for f in out])
    assert [testmedia.frame_number(p) for p in pictures] == numbers


def test_depacketizers_refuse_malformed_payloads() -> None:
    assembler = FrameAssembler("H264")
    # an FU-A end without its start, after a valid keyframe start: counted, not raised
    frames = assembler.push(1, 0, False, bytes([0x7C, 0x85]) + b"\x88" * 10, 0.0)
    frames += assembler.push(2, 0, True, bytes([0x7C, 0x45]) + b"\x00" * 4, 0.0)
    assert len(frames) == 1  # start and end: a complete IDR
    frames = assembler.push(3, 3000, True, bytes([0x7C, 0x41]) + b"\x00" * 4, 0.0)
    assert frames == [] and assembler.malformed == 1 and assembler.want_keyframe
    with pytest.raises(ValueError):
        FrameAssembler("MPEG2")


# --- through the server ------------------------------------------------------------------


def _tone_hz(frames) -> float:
    """Frequency of the decoded tone from zero crossings of the first channel."""
    samples: list[float] = []
    for decoded in frames:
        frame = decoded.frame
        plane = bytes(frame.planes[0])
        if frame.format.name == "fltp":
            samples += struct.unpack_from(f"<{frame.samples}f", plane)
        elif frame.format.name == "flt":
            samples += struct.unpack_from(f"<{frame.samples * len(frame.layout.channels)}f", plane)[:: len(frame.layout.channels)]
        else:
            raise AssertionError(f"unexpected sample format {frame.format.name}")
    skip = 960 * 3  # the decoder's first frames ramp up
    body = samples[skip:]
    crossings = sum(1 for a, b in zip(body, body[1:], strict=False) if (a < 0) != (b < 0))
    return crossings / 2 / (len(body) / 48000)


@pytest.mark.parametrize("codec,audio", [("H264", True), ("VP8", True), ("VP9", False), ("AV1", False)])
def test_file_through_the_server_decodes_to_the_source(codec, audio, sfu_server_factory, sfu_publisher,
                                                        sfu_viewer, tmp_path) -> None:
    frames = 60
    clip = testmedia.make_test_file(tmp_path / f"clip.{FILES[codec]}", video=codec, audio=audio, frames=frames)
    server = sfu_server_factory(whep_wait_for_publisher=True)
    viewer = sfu_viewer("shop", server=server, decode=True, wait=False)  # before its publisher
    publisher = sfu_publisher("shop", source=clip, server=server)
    viewer.wait_for_frames(frames, timeout=15)
    publisher.wait_finished(timeout=10)

    decoded = viewer.decoded_frames()
    numbers = [testmedia.frame_number(d.frame) for d in decoded]
    # one keyframe at the start: the viewer starts from it (keyframe cache) and gets every frame
    assert numbers == list(range(frames))
    assert {(d.frame.width, d.frame.height) for d in decoded} == {(320, 240)}
    source = _source_pictures(clip)
    assert max(testmedia.luma_difference(d.frame, source[n]) for d, n in zip(decoded, numbers, strict=True)) == 0
    # and within codec tolerance of the pictures that were encoded
    worst = max(testmedia.luma_difference(d.frame, testmedia.make_video_frame(320, 240, n))
                for d, n in zip(decoded[::10], numbers[::10], strict=True))
    assert worst < 12, worst
    stats = viewer.stats["frames"]
    assert stats["frames_dropped"] == stats["decode_errors"] == stats["frames_malformed"] == 0

    if audio:
        sent = publisher.stats["audio"]["packets"]
        viewer.wait_for(lambda v: v.receiver.counts["audio"] >= 25, timeout=5)
        audio_frames = viewer.decoded_frames("audio")
        assert {d.frame.sample_rate for d in audio_frames} == {48000}
        steps = {(b.source.rtp_timestamp - a.source.rtp_timestamp) & 0xFFFFFFFF
                 for a, b in zip(audio_frames, audio_frames[1:], strict=False)}
        assert steps == {960}  # consecutive 20 ms packets: nothing lost or reordered
        assert len(audio_frames) <= sent
        assert math.isclose(_tone_hz(audio_frames), 440, rel_tol=0.03)


def test_simulcast_from_two_files_and_choosing_a_layer(sfu_server, sfu_publisher, sfu_viewer, tmp_path) -> None:
    low = testmedia.make_test_file(tmp_path / "low.webm", video="VP8", audio=False, frames=30,
                                   width=160, height=120, gop=10, bitrate=150_000)
    high = testmedia.make_test_file(tmp_path / "high.webm", video="VP8", audio=True, frames=30, gop=10)
    publisher = sfu_publisher("sim", source=[low, high], rids=["q", "f"], loop=True)
    viewer = sfu_viewer("sim", decode=True, query={"layer": "f"})
    viewer.wait_for(lambda v: any(d.frame.width == 320 for d in v.receiver.decoded["video"]), timeout=10)
    viewer.select_layer("q")
    viewer.wait_for(lambda v: v.receiver.decoded["video"][-1].frame.width == 160, timeout=10)
    assert publisher.stats["layers"].keys() == {"q", "f"}
    # the low layer's pictures carry their numbers too, and keep counting across the switch
    last = viewer.decoded_frames()[-1].frame
    assert 0 <= testmedia.frame_number(last) < 30


def test_viewer_writes_what_it_received(sfu_server, sfu_publisher, sfu_viewer, tmp_path) -> None:
    clip = testmedia.make_test_file(tmp_path / "clip.webm", video="VP8", audio=False, frames=30)
    viewer = sfu_viewer("rec", frames=True, wait=False)
    viewer.wait_for(lambda v: v.not_live_retries >= 1)  # got a 409: the stream is not live yet
    sfu_publisher("rec", source=clip)
    viewer.wait_for_frames(30)
    written = viewer.write_video(tmp_path / "received.ivf")
    with av.open(str(written)) as container:
        assert [testmedia.frame_number(f) for f in container.decode(video=0)] == list(range(30))


CACHE_REPLAY_STEP = 90  # ticks of 90 kHz between replayed frames (sfu/_repair.pxi KF_REPLAY_STEP_S)


def test_a_looping_file_keeps_time_going(sfu_server, sfu_publisher, sfu_viewer, tmp_path) -> None:
    clip = testmedia.make_test_file(tmp_path / "clip.mp4", video="H264", frames=15, gop=15)
    publisher = sfu_publisher("loop", source=clip, loop=True)
    viewer = sfu_viewer("loop", decode=True)
    viewer.wait_for_frames(40, timeout=10)
    decoded = viewer.decoded_frames()
    numbers = [testmedia.frame_number(d.frame) for d in decoded]
    start = numbers[0]
    assert numbers == [(start + i) % 15 for i in range(len(numbers))]  # 0..14, 0..14, ...
    all_steps = [(b.source.rtp_timestamp - a.source.rtp_timestamp) & 0xFFFFFFFF
                 for a, b in zip(decoded, decoded[1:], strict=False)]
    # A viewer that joins mid-group starts with the server's keyframe-cache replay, whose frames
    # are 1 ms apart (90 ticks): the file's own timing is what follows.
    steps = set(itertools.dropwhile(lambda step: step == CACHE_REPLAY_STEP, all_steps))
    # 90 kHz / 30 fps; at the loop point, what is left of the loop period (audio and video share
    # one period, the longer track's, so they stay together)
    video_track = next(t for t in publisher.client.tracks.values() if t.kind == "video")
    at_loop = round((publisher.client.loop_duration - video_track.frames[-1][0]) * 90000)
    assert steps == {3000, at_loop}, all_steps
    assert publisher.stats["loops"] >= 2 and not publisher.stats["finished"]
    audio = viewer.encoded_frames("audio")
    audio_steps = {(b.rtp_timestamp - a.rtp_timestamp) & 0xFFFFFFFF for a, b in zip(audio, audio[1:], strict=False)}
    assert audio_steps == {960}


def test_opus_packet_durations() -> None:
    assert packetize.opus_samples(bytes([31 << 3])) == 960  # CELT FB 20 ms
    assert packetize.opus_samples(bytes([(1 << 3) | 1])) == 2 * 960  # SILK 20 ms, two frames
    assert packetize.opus_samples(bytes([(16 << 3) | 3, 6])) == 6 * 120  # CELT 2.5 ms x 6
    with pytest.raises(ValueError):
        packetize.opus_samples(b"")


NO_FASTPATH_CLIENTS = '''
import asyncio, json, sys

class Block:  # the compiled module is not there, as on a host that never built it
    def find_spec(self, name, path=None, target=None):
        if name == "sfu._fastpath":
            raise ImportError("sfu._fastpath blocked for this test")

sys.meta_path.insert(0, Block())

from sfu.testing import FilePublisher, PacketViewer, testmedia

async def main(whip, whep, token, clip):
    viewer = PacketViewer(whep, decode=True, wait_for_publisher=10)
    joining = asyncio.create_task(viewer.start())  # before the publisher: waits for it
    async with FilePublisher(whip, token, clip):
        await joining
        await viewer.wait_for_frames(30, timeout=15)
    await viewer.stop()
    numbers = [testmedia.frame_number(d.frame) for d in viewer.decoded_frames()]
    print(json.dumps({"numbers": numbers, "srtp": type(viewer._rx).__name__,
                      "fastpath": "sfu._fastpath" in sys.modules}))

asyncio.run(main(*sys.argv[1:]))
'''


def test_clients_work_without_the_compiled_module(tmp_path) -> None:
    """The clients need no Cython build: SRTP falls back to pylibsrtp (the `media` extra)."""
    import json
    import subprocess
    import sys

    from sfu.config import Config
    from sfu.testing.plugin import LocalServer, Stage

    clip = testmedia.make_test_file(tmp_path / "clip.webm", video="VP8", frames=30)
    stage = Stage()
    try:
        node = LocalServer(stage, dataclasses.replace(Config.for_tests(), whep_wait_for_publisher=True))
        run = subprocess.run(
            [sys.executable, "-c", NO_FASTPATH_CLIENTS, node.whip_url("s"), node.whep_url("s"),
             node.token("s", publish=True), str(clip)],
            capture_output=True, text=True, timeout=120,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result == {"numbers": list(range(30)), "srtp": "_PylibsrtpContext", "fastpath": False}
        node.stop()
    finally:
        assert stage.close() == []
