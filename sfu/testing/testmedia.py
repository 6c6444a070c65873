"""Test media made at run time with PyAV: video whose pictures say their own frame number, and a
tone, so a test can check what a viewer decoded without committing binary files.

Each picture is 16 vertical bars on a mid-grey band: bar i is bright when bit i of the frame
number is set (`frame_number` reads it back from a decoded picture, robust to coding noise);
the rest of the picture is a gradient that moves with the frame number, so pictures differ.
Audio is a sine tone. Needs the `media` extra (`pip install sfu[media]`).
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

BITS = 16  # frame numbers up to 65535
BAR_TOP, BAR_BOTTOM = 0.25, 0.75  # the band of bars, as shares of the height
BRIGHT, DARK = 235, 16  # luma of a set / clear bit (studio range)

# codec -> (PyAV encoder, encoder options); no B-frames: WebRTC sends frames in display order
ENCODERS: dict[str, tuple[str, dict[str, str]]] = {
    "H264": ("libx264", {"bf": "0", "preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"}),
    "VP8": ("libvpx", {"auto-alt-ref": "0", "lag-in-frames": "0", "deadline": "realtime", "cpu-used": "8"}),
    "VP9": ("libvpx-vp9", {"auto-alt-ref": "0", "lag-in-frames": "0", "deadline": "realtime",
                           "cpu-used": "8", "row-mt": "1"}),
    "AV1": ("libsvtav1", {"preset": "11"}),
}
AUDIO_RATE = 48000


def _luma_plane(width: int, height: int, stride: int, number: int) -> bytes:
    row_bits = bytearray(width)
    bar = width // BITS
    for i in range(BITS):
        value = BRIGHT if (number >> i) & 1 else DARK
        row_bits[i * bar : (i + 1) * bar] = bytes([value]) * bar
    top, bottom = int(height * BAR_TOP), int(height * BAR_BOTTOM)
    out = bytearray()
    for y in range(height):
        if top <= y < bottom:
            row = bytes(row_bits)
        else:
            row = bytes(((x + y + 4 * number) % 200) + 28 for x in range(width))
        out += row + bytes(stride - width)
    return bytes(out)


def make_video_frame(width: int, height: int, number: int) -> Any:
    """An `av.VideoFrame` (yuv420p) showing `number`."""
    import av

    frame = av.VideoFrame(width, height, "yuv420p")
    luma = frame.planes[0]
    luma.update(_luma_plane(width, height, luma.line_size, number))
    for plane in frame.planes[1:]:
        plane.update(bytes([128]) * (plane.line_size * plane.height))
    return frame


def frame_number(frame: Any) -> int:
    """The number `make_video_frame` drew, read from a decoded `av.VideoFrame` of any size."""
    gray = frame.reformat(format="gray")
    plane = gray.planes[0]
    data = bytes(plane)
    width, height = gray.width, gray.height
    bar = width / BITS
    rows = range(int(height * 0.35), int(height * 0.65), max(1, height // 40))
    number = 0
    for i in range(BITS):
        x0, x1 = int(i * bar + bar * 0.25), int(i * bar + bar * 0.75)
        total = count = 0
        for y in rows:
            line = data[y * plane.line_size + x0 : y * plane.line_size + x1]
            total += sum(line)
            count += len(line)
        if total / max(1, count) > (BRIGHT + DARK) / 2:
            number |= 1 << i
    return number


def luma_difference(a: Any, b: Any) -> float:
    """Mean absolute difference of two pictures' luma (0..255), sampled on every 4th row."""
    ga, gb = a.reformat(format="gray"), b.reformat(format="gray")
    if (ga.width, ga.height) != (gb.width, gb.height):
        raise ValueError(f"sizes differ: {ga.width}x{ga.height} vs {gb.width}x{gb.height}")
    pa, pb = ga.planes[0], gb.planes[0]
    da, db = bytes(pa), bytes(pb)
    total = count = 0
    for y in range(0, ga.height, 4):
        ra = da[y * pa.line_size : y * pa.line_size + ga.width]
        rb = db[y * pb.line_size : y * pb.line_size + gb.width]
        total += sum(abs(x - z) for x, z in zip(ra, rb, strict=True))
        count += ga.width
    return total / max(1, count)


def make_test_file(
    path: str | Path, *, video: str | None = "H264", audio: bool = True, frames: int = 60,
    width: int = 320, height: int = 240, fps: int = 30, gop: int | None = None,
    bitrate: int = 600_000, tone_hz: float = 440.0,
) -> Path:
    """Write a file (container from the suffix: .mp4, .mkv, .webm) with `frames` numbered
    pictures in `video` ("H264", "VP8", "VP9", "AV1" or None) and, with `audio`, as long a tone
    in Opus. `gop`: frames between keyframes (None: only the first frame is a keyframe)."""
    import av

    path = Path(path)
    container = av.open(str(path), "w")
    vstream: Any = None
    astream: Any = None
    if video is not None:
        encoder, options = ENCODERS[video.upper()]
        options = dict(options)
        keyint = str(gop or frames + 1)
        options["g"] = keyint
        if video.upper() == "H264":
            options["x264-params"] = f"keyint={keyint}:min-keyint={keyint}:scenecut=0"
        vstream = container.add_stream(encoder, rate=fps, options=options)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.bit_rate = bitrate
    if audio:
        astream = container.add_stream("libopus", rate=AUDIO_RATE)
        astream.layout = "mono"
    for number in range(frames):
        if vstream is not None:
            frame = make_video_frame(width, height, number)
            frame.pts = number
            frame.time_base = Fraction(1, fps)
            container.mux(vstream.encode(frame))
    if vstream is not None:
        container.mux(vstream.encode(None))
    if astream is not None:
        samples_total = int(frames / fps * AUDIO_RATE)
        chunk = 960
        for start in range(0, samples_total, chunk):
            frame = av.AudioFrame(format="s16", layout="mono", samples=chunk)
            frame.planes[0].update(b"".join(
                int(12000 * math.sin(2 * math.pi * tone_hz * (start + i) / AUDIO_RATE)).to_bytes(2, "little", signed=True)
                for i in range(chunk)
            ))
            frame.sample_rate = AUDIO_RATE
            frame.pts = start
            frame.time_base = Fraction(1, AUDIO_RATE)
            container.mux(astream.encode(frame))
        container.mux(astream.encode(None))
    container.close()
    return path
