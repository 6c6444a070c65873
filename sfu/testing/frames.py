"""What a viewer makes of the media it receives: encoded frames (always), decoded pictures and
audio (with `decode=True`, PyAV), and files written from the encoded frames.

`FrameReceiver` is driven by `on_packet(...)` from the viewer's receive path (one call per
new RTP packet, after SRTP and duplicate removal) and `expire(now)` from its timer. Video goes
through a `FrameAssembler` per SSRC; each Opus packet is a frame. Frames are kept in bounded
lists (`keep` most recent); counters keep counting past that.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfu.testing.depacketize import DEPACKETIZERS, EncodedFrame, FrameAssembler

# codec -> PyAV decoder
DECODERS = {"H264": "h264", "VP8": "vp8", "VP9": "vp9", "AV1": "libdav1d", "OPUS": "opus"}
IVF_FOURCC = {"VP8": b"VP80", "VP9": b"VP90", "AV1": b"AV01"}
KEEP_FRAMES = 600  # per kind: 20 s of 30 fps video


@dataclass(slots=True)
class DecodedFrame:
    """A decoded picture or audio frame with the encoded frame it came from."""

    source: EncodedFrame
    frame: Any  # av.VideoFrame or av.AudioFrame


class FrameReceiver:
    """Encoded and (optionally) decoded frames of one viewer (see the module docstring)."""

    def __init__(self, *, decode: bool = False, keep: int = KEEP_FRAMES) -> None:
        if decode:
            import av  # noqa: F401  (fail at construction, not on the first packet)
        self.decode = decode
        self.encoded: dict[str, deque[EncodedFrame]] = {"video": deque(maxlen=keep), "audio": deque(maxlen=keep)}
        self.decoded: dict[str, deque[DecodedFrame]] = {"video": deque(maxlen=keep), "audio": deque(maxlen=keep)}
        self.counts = {"video": 0, "audio": 0}  # encoded frames completed
        self.decoded_counts = {"video": 0, "audio": 0}
        self.decode_errors = 0
        self.unsupported: set[str] = set()
        self._assemblers: dict[int, FrameAssembler] = {}
        self._decoders: dict[int, Any] = {}
        self._all_video: list[EncodedFrame] | None = None  # kept whole while a file is to be written

    # --- input --------------------------------------------------------------------------

    def on_packet(self, kind: str, codec: str, ssrc: int, ext_seq: int, ts: int, marker: bool,
                  payload: bytes, now: float) -> None:
        if kind == "audio":
            self._add(ssrc, EncodedFrame("audio", codec.upper(), ts, payload, True, 1, now))
            return
        assembler = self._assemblers.get(ssrc)
        if assembler is None:
            if codec.upper() not in DEPACKETIZERS:
                self.unsupported.add(codec)
                return
            assembler = self._assemblers[ssrc] = FrameAssembler(codec)
        for frame in assembler.push(ext_seq, ts, marker, payload, now):
            self._add(ssrc, frame)

    def expire(self, now: float) -> None:
        for ssrc, assembler in self._assemblers.items():
            for frame in assembler.expire(now):
                self._add(ssrc, frame)

    @property
    def want_keyframe(self) -> bool:
        """Some video stream lost a frame and waits for a keyframe (send a PLI)."""
        return any(a.want_keyframe and a.frames for a in self._assemblers.values())

    def _add(self, ssrc: int, frame: EncodedFrame) -> None:
        self.encoded[frame.kind].append(frame)
        self.counts[frame.kind] += 1
        if self._all_video is not None and frame.kind == "video":
            self._all_video.append(frame)
        if self.decode:
            self._decode(ssrc, frame)

    def _decode(self, ssrc: int, frame: EncodedFrame) -> None:
        import av

        decoder: Any = self._decoders.get(ssrc)
        if decoder is None:
            decoder = av.CodecContext.create(DECODERS[frame.codec], "r")
            if frame.codec == "AV1":  # dav1d: a picture per frame, no lag, no worker threads to wait on
                decoder.options = {"max_frame_delay": "1"}
                decoder.thread_count = 1
            if frame.kind == "audio":
                decoder.sample_rate = 48000
                decoder.layout = "stereo"
            self._decoders[ssrc] = decoder
        packet = av.Packet(frame.data)
        packet.pts = frame.rtp_timestamp
        try:
            pictures = decoder.decode(packet)
        except av.error.FFmpegError:
            self.decode_errors += 1
            return
        for picture in pictures:
            self.decoded[frame.kind].append(DecodedFrame(frame, picture))
            self.decoded_counts[frame.kind] += 1

    # --- output -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        assemblers = list(self._assemblers.values())
        return {
            "video_frames": self.counts["video"],
            "audio_frames": self.counts["audio"],
            "keyframes": sum(a.keyframes for a in assemblers),
            "frames_dropped": sum(a.frames_dropped for a in assemblers),
            "frames_malformed": sum(a.malformed for a in assemblers),
            "packets_too_late": sum(a.packets_too_late for a in assemblers),
            "packets_before_keyframe": sum(a.packets_before_keyframe for a in assemblers),
            "decoded_video": self.decoded_counts["video"],
            "decoded_audio": self.decoded_counts["audio"],
            "decode_errors": self.decode_errors,
            "unsupported_codecs": sorted(self.unsupported),
        }

    def record(self) -> None:
        """Keep every video frame from now on (not only the last `keep`), for `write_video`."""
        if self._all_video is None:
            self._all_video = []

    def write_video(self, path: str | Path) -> Path:
        """Write the received video as an elementary stream PyAV and ffmpeg read: IVF for VP8,
        VP9 and AV1, Annex-B (.h264) for H.264. All frames since `record()`, else the kept ones."""
        frames = self._all_video if self._all_video is not None else list(self.encoded["video"])
        if not frames:
            raise ValueError("no video frame received")
        path = Path(path)
        codec = frames[0].codec
        with path.open("wb") as out:
            if codec == "H264":
                for frame in frames:
                    out.write(frame.data)
                return path
            width = height = 0
            decoded = self.decoded["video"]
            if decoded:
                width, height = decoded[-1].frame.width, decoded[-1].frame.height
            # IVF: 32-byte file header, then a 12-byte header per frame (size, 64-bit pts)
            out.write(b"DKIF" + struct.pack("<HH4sHHIIII", 0, 32, IVF_FOURCC[codec], width, height, 90000, 1,
                                           len(frames), 0))
            base = frames[0].rtp_timestamp
            for frame in frames:
                out.write(struct.pack("<IQ", len(frame.data), (frame.rtp_timestamp - base) & 0xFFFFFFFF))
                out.write(frame.data)
        return path
