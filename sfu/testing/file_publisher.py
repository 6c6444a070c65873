"""FilePublisher: a WHIP client that publishes the encoded video and audio of media files, at
their own pace, without decoding or re-encoding (PyAV demuxes; `packetize` makes the RTP).

Driven like `PacketPublisher` (whose ICE, DTLS, SRTP, NACK answering and sender reports it
keeps): `start()` / `stop()`, datagrams and one timer. Each demuxed packet is due at the
connection time plus its presentation time (plus the file's duration per completed loop);
the timer sends what is due. Video: H.264, VP8, VP9, AV1; audio: Opus. Several files make a
simulcast publication, one layer per file (the video of each; audio from the first).
Keyframe requests are counted but cannot be honoured (a file has the keyframes it has, like
OBS); a looping file restarts on its first keyframe.

Files are read into memory at construction: meant for test clips of seconds, not films.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp

from sfu.testing import media, packetize
from sfu.testing.publisher import PacketPublisher

VIDEO_CODECS = {"h264": "H264", "vp8": "VP8", "vp9": "VP9", "av1": "AV1", "libdav1d": "AV1", "libaom-av1": "AV1"}
AUDIO_CODECS = {"opus": "OPUS", "libopus": "OPUS"}
AUDIO_RATE = 48000  # Opus RTP clock (RFC 7587 §4.1)
FALLBACK_FRAME_S = 1 / 30  # duration of a last video frame whose packet has none


@dataclass(slots=True)
class Track:
    """What was read from one file's stream: encoded frames with their presentation times."""

    kind: str  # "video" or "audio"
    codec: str  # "H264", "VP8", "VP9", "AV1", "OPUS"
    frames: list[tuple[float, bytes, bool]] = field(default_factory=list)  # (pts s from 0, data, keyframe)
    width: int = 0
    height: int = 0
    duration: float = 0.0  # pts of the end of the last frame
    h264_parameter_sets: list[bytes] = field(default_factory=list)
    h264_length_size: int = 0  # 0: Annex-B samples

    def rtp_frame(self, index: int) -> Any:
        """The frame in the form its packetiser takes (H.264: NAL units, SPS/PPS before keyframes)."""
        _, data, keyframe = self.frames[index]
        if self.codec != "H264":
            return data
        nalus = (
            packetize.avcc_nalus(data, self.h264_length_size) if self.h264_length_size
            else packetize.annexb_nalus(data)
        )
        types = {n[0] & 0x1F for n in nalus}
        if keyframe and packetize.NAL_TYPE_SPS not in types and self.h264_parameter_sets:
            nalus = list(self.h264_parameter_sets) + nalus
        return nalus


def read_tracks(path: str | Path) -> tuple[Track | None, Track | None]:
    """(video, audio) of a media file: the first stream of each kind with a supported codec."""
    import av

    container = av.open(str(path))
    try:
        vstream = next((s for s in container.streams.video if s.codec_context.name in VIDEO_CODECS), None)
        astream = next((s for s in container.streams.audio if s.codec_context.name in AUDIO_CODECS), None)
        if vstream is None and astream is None:
            found = [f"{s.type}:{s.codec_context.name}" for s in container.streams]
            raise ValueError(f"{path}: no H.264/VP8/VP9/AV1 video or Opus audio (streams: {found})")
        tracks: dict[int, Track] = {}
        if vstream is not None:
            video = Track("video", VIDEO_CODECS[vstream.codec_context.name],
                          width=vstream.codec_context.width, height=vstream.codec_context.height)
            extradata = bytes(vstream.codec_context.extradata or b"")
            if video.codec == "H264" and extradata[:1] == b"\x01":
                video.h264_length_size, video.h264_parameter_sets = packetize.avcc_config(extradata)
            elif video.codec == "H264" and extradata:
                video.h264_parameter_sets = packetize.annexb_nalus(extradata)
            tracks[vstream.index] = video
        if astream is not None:
            tracks[astream.index] = Track("audio", "OPUS")
        starts: dict[int, float] = {}
        for packet in container.demux([s for s in (vstream, astream) if s is not None]):
            if packet.size == 0 or packet.pts is None:
                continue
            track = tracks[packet.stream.index]
            time_base: Fraction = packet.time_base
            pts = float(packet.pts * time_base)
            start = starts.setdefault(packet.stream.index, pts)
            end = pts + (float(packet.duration * time_base) if packet.duration else 0.0)
            track.frames.append((pts - start, bytes(packet), bool(packet.is_keyframe)))
            track.duration = max(track.duration, end - start)
        for track in tracks.values():
            track.frames.sort(key=lambda f: f[0])
            if track.kind == "audio":  # containers round times (WebM: ms); the packets say exactly
                at = 0
                for index, (_, data, key) in enumerate(track.frames):
                    track.frames[index] = (at / AUDIO_RATE, data, key)
                    at += packetize.opus_samples(data)
                track.duration = at / AUDIO_RATE
            if track.frames and track.duration <= track.frames[-1][0]:
                track.duration = track.frames[-1][0] + FALLBACK_FRAME_S
        video_track = tracks[vstream.index] if vstream is not None else None
        audio_track = tracks[astream.index] if astream is not None else None
    finally:
        container.close()
    return video_track, audio_track


class FilePublisher(PacketPublisher):
    """WHIP publisher of media files' encoded frames (see the module docstring).

    `source`: one file, or several for simulcast (one layer per file, `rids` in the same order,
    default "q", "h", "f"... lowest first, as browsers send). `loop`: start again at the end
    (forever, until `stop()`); otherwise `finished` turns True after the last frame.
    """

    def __init__(
        self, whip_url: str, token: str | None, source: str | Path | list[str | Path], *,
        loop: bool = False, rids: list[str] | None = None, audio: bool = True, video: bool = True,
        srtp_profiles: tuple[str, ...] = ("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"),
        local_addr: str = "127.0.0.1", connect_timeout: float = 10.0,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        sources = [source] if isinstance(source, (str, Path)) else list(source)
        if not sources:
            raise ValueError("no source file")
        read = [read_tracks(p) for p in sources]
        videos = [v for v, _ in read if v is not None] if video else []
        if video and len(sources) > 1 and len(videos) != len(sources):
            raise ValueError("simulcast: every file needs a video stream")
        if len({v.codec for v in videos}) > 1:
            raise ValueError(f"simulcast layers must share a codec, got {[v.codec for v in videos]}")
        audio_track = read[0][1] if audio else None
        if not videos and audio_track is None:
            raise ValueError(f"{sources[0]}: nothing to publish")
        if len(videos) > 1:
            rids = list(rids) if rids else ["q", "h", "f", "x", "y", "z"][: len(videos)]
            if len(rids) != len(videos):
                raise ValueError(f"{len(videos)} files but {len(rids)} rids")
        else:
            rids = []
        super().__init__(
            whip_url, token, video_codec="VP8" if videos else None, audio=audio_track is not None,
            simulcast_rids=rids, keyframe_interval=0, srtp_profiles=srtp_profiles, local_addr=local_addr,
            connect_timeout=connect_timeout, http=http,
        )
        self.sources = [Path(p) for p in sources]
        self.loop = loop
        self.video_codec = videos[0].codec if videos else None
        self.tracks: dict[int, Track] = {}  # our SSRC -> what it sends
        self._cursor: dict[int, int] = {}  # SSRC -> next frame index
        self._loops: dict[int, int] = {}  # SSRC -> completed loops
        for index, (stream, track) in enumerate(zip(self._video_streams, videos, strict=True)):
            stream.layer = media.LayerPlan(rids[index] if rids else "", index, track.width, track.height, 0)
            self.tracks[stream.ssrc] = track
        if self._audio_stream is not None and audio_track is not None:
            self.tracks[self._audio_stream.ssrc] = audio_track
        for ssrc in self.tracks:
            self._cursor[ssrc] = self._loops[ssrc] = 0
        # one period for every track, so audio and video stay together loop after loop
        self.loop_duration = max(t.duration for t in self.tracks.values())
        self.finished = False

    def build_offer(self) -> str:
        """As `PacketPublisher`'s, with H.264's profile-level-id taken from the file's SPS
        (RFC 6184 §8.1: profile_idc, constraint flags, level_idc)."""
        offer = super().build_offer()
        track = next(iter(t for t in self.tracks.values() if t.kind == "video"), None)
        sps = next((p for p in track.h264_parameter_sets if p[0] & 0x1F == packetize.NAL_TYPE_SPS), None) if track else None
        if sps is not None and len(sps) >= 4:
            offer = offer.replace("profile-level-id=42e01f", f"profile-level-id={sps[1:4].hex()}")
        return offer

    def _on_connected(self, now: float) -> None:
        super()._on_connected(now)
        for stream in self._streams:
            stream.next_due = now + self.tracks[stream.ssrc].frames[0][0] if self.tracks[stream.ssrc].frames else now

    def _periodic(self, now: float) -> float:
        deadline = now + 1.0
        done = True
        for stream in self._streams:
            track = self.tracks[stream.ssrc]
            while track.frames and stream.next_due <= now:
                index = self._cursor[stream.ssrc]
                offset = self._loops[stream.ssrc] * self.loop_duration
                pts = track.frames[index][0] + offset
                self._send_frame(stream, track, index, pts)
                index += 1
                if index == len(track.frames):
                    if not self.loop:
                        stream.next_due = float("inf")
                        break
                    index = 0
                    self._loops[stream.ssrc] += 1
                    offset += self.loop_duration
                self._cursor[stream.ssrc] = index
                stream.next_due = stream.started_at + track.frames[index][0] + offset
            if stream.next_due != float("inf"):
                done = False
                deadline = min(deadline, stream.next_due)
        if done and not self.finished:
            self.finished = True
        if now >= self._next_sr:
            self._send_sender_reports(now)
            self._next_sr = now + 1.0
        return min(deadline, self._next_sr)

    def _send_frame(self, stream: Any, track: Track, index: int, pts: float) -> None:
        ts = stream.ts_base + round(pts * stream.clock)
        if track.kind == "audio":
            self._send_packet(stream, track.frames[index][1], ts, stream.frames == 0)
            stream.frames += 1
            return
        max_payload = media.MAX_RTP_PACKET - 12 - len(self._extension(stream, count_twcc=False))
        frame = track.rtp_frame(index)
        keyframe = track.frames[index][2]
        if track.codec == "H264":
            payloads = packetize.h264_payloads(frame, max_payload)
        elif track.codec == "VP8":
            payloads = packetize.vp8_payloads(frame, stream.picture_id, max_payload)
            stream.picture_id = (stream.picture_id + 1) & 0x7FFF
        elif track.codec == "VP9":
            payloads = packetize.vp9_payloads(
                frame, stream.picture_id, max_payload, keyframe=keyframe, width=track.width, height=track.height)
            stream.picture_id = (stream.picture_id + 1) & 0x7FFF
        else:
            payloads = packetize.av1_payloads(frame, max_payload)
        if keyframe:
            stream.keyframes += 1
            assert self._loop is not None
            stream.last_keyframe_at = self._loop.time()
        last = len(payloads) - 1
        for number, payload in enumerate(payloads):
            self._send_packet(stream, payload, ts, number == last)
        stream.frames += 1

    def request_keyframe(self) -> None:
        """A file cannot make keyframes on demand: nothing to do (PLIs are counted in `stats`)."""

    def _keyframe_for(self, media_ssrc: int) -> None:
        pass

    @property
    def stats(self) -> dict[str, Any]:
        out = super().stats
        out["finished"] = self.finished
        out["loops"] = max(self._loops.values(), default=0)
        out["sources"] = [str(p) for p in self.sources]
        return out
