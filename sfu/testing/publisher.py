"""PacketPublisher: a WHIP (RFC 9725) client that sends synthetic RTP (see `media.py`).

Driven by: `start()` / `stop()`, datagrams (STUN, DTLS, SRTCP feedback) and one timer.
Per video layer, every 1/fps s, a frame of `bitrate / 8 / fps` bytes goes out as packets of
at most 1200 bytes (marker on the last); a keyframe every `keyframe_interval` s and on
PLI/FIR (unless `ignore_pli`). Opus-sized audio every 20 ms. Sender reports every second.
NACKed packets are resent from a per-SSRC history (same SSRC and bytes: no RTX, like OBS).
"""

from __future__ import annotations

import random
import time
from typing import Any

import aiohttp

from sfu.testing import media
from sfu.testing._client import WhipError, _Client
from sfu.testing.sdp import (
    EXT_MID, EXT_RID, EXT_TWCC, Answer, MediaOffer, build_offer, ice_credentials,
)
from sfu.wire import rtcp

AUDIO_PTIME_S = 0.02
AUDIO_CLOCK = 48000
VIDEO_CLOCK = 90000
AUDIO_PACKET_BYTES = 80  # ~32 kbit/s of Opus
HISTORY_SIZE = 1024  # packets kept per SSRC for NACK; power of two
SENDER_REPORT_INTERVAL_S = 1.0
MAX_CATCH_UP_S = 0.5  # after a stall longer than this, skip frames instead of bursting
assert HISTORY_SIZE & (HISTORY_SIZE - 1) == 0


class _SendStream:
    __slots__ = (
        "kind", "layer", "ssrc", "pt", "codec", "mid", "seq", "ts_base", "clock", "period",
        "next_due", "frames", "picture_id", "keyframe_requested", "last_keyframe_at",
        "packets", "bytes", "keyframes", "plis", "firs", "nacked", "retransmits",
        "retransmit_misses", "history", "started_at",
    )

    def __init__(self, kind: str, layer: media.LayerPlan | None, ssrc: int, period: float, clock: int) -> None:
        self.kind = kind
        self.layer = layer
        self.ssrc = ssrc
        self.pt = 0
        self.codec = ""
        self.mid = ""
        self.seq = random.getrandbits(16)
        self.ts_base = random.getrandbits(32)
        self.clock = clock
        self.period = period
        self.next_due = 0.0
        self.started_at = 0.0
        self.frames = 0
        self.picture_id = random.getrandbits(15)
        self.keyframe_requested = False
        self.last_keyframe_at = -1e9
        self.packets = self.bytes = self.keyframes = 0
        self.plis = self.firs = self.nacked = self.retransmits = self.retransmit_misses = 0
        self.history: list[tuple[int, bytes] | None] = [None] * HISTORY_SIZE

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ssrc": self.ssrc, "packets": self.packets, "bytes": self.bytes, "frames": self.frames,
            "nacked": self.nacked, "retransmits": self.retransmits,
            "retransmit_misses": self.retransmit_misses,
        }
        if self.kind == "video":
            assert self.layer is not None
            out.update(
                rid=self.layer.rid, width=self.layer.width, height=self.layer.height,
                bitrate=self.layer.bitrate, keyframes=self.keyframes, plis=self.plis, firs=self.firs,
            )
        return out


class PacketPublisher(_Client):
    """WHIP publisher of synthetic VP8/H.264 + Opus RTP; no encoder involved."""

    _error_class = WhipError

    def __init__(
        self, whip_url: str, token: str | None = None, *, video_codec: str | None = "VP8",
        audio: bool = True, bitrate: int = 1_000_000, fps: float = 30, keyframe_interval: float = 2.0,
        simulcast_rids: list[str] | tuple[str, ...] = (), ignore_pli: bool = False,
        drop_rate: float = 0.0, drop_seed: int | None = None,
        srtp_profiles: tuple[str, ...] = ("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"),
        local_addr: str = "127.0.0.1", connect_timeout: float = 10.0,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__(
            whip_url, token, srtp_profiles=srtp_profiles, local_addr=local_addr,
            connect_timeout=connect_timeout, http=http,
        )
        if video_codec is None and not audio:
            raise ValueError("nothing to publish")
        if video_codec is not None and video_codec.upper() not in ("VP8", "H264"):
            raise ValueError(f"unsupported video codec {video_codec!r}")
        self.video_codec = video_codec.upper() if video_codec else None
        self.audio = audio
        self.bitrate = bitrate
        self.fps = fps
        self.keyframe_interval = keyframe_interval
        self.simulcast_rids = list(simulcast_rids)
        self.ignore_pli = ignore_pli
        # simulated loss on the way in: this share of the video packets (retransmissions too) is
        # never sent, as if the network had lost it; they stay in the history for NACKs (seeded)
        self.drop_rate = drop_rate
        self._drop_rng = random.Random(drop_seed) if drop_rate > 0 else None
        self.dropped_by_test = 0
        self._rrtr: tuple[int, float] | None = None  # last XR RRTR (NTP middle 32 bits, arrival)
        self.cname = ice_credentials()[0]
        self._streams: list[_SendStream] = []
        self._by_ssrc: dict[int, _SendStream] = {}
        self._audio_stream: _SendStream | None = None
        if audio:
            self._audio_stream = _SendStream("audio", None, random.getrandbits(32), AUDIO_PTIME_S, AUDIO_CLOCK)
            self._streams.append(self._audio_stream)
        self._video_streams: list[_SendStream] = []
        if self.video_codec:
            for plan in media.plan_layers(self.simulcast_rids, bitrate):
                stream = _SendStream("video", plan, random.getrandbits(32), 1.0 / fps, VIDEO_CLOCK)
                self._video_streams.append(stream)
                self._streams.append(stream)
        for stream in self._streams:
            self._by_ssrc[stream.ssrc] = stream
        self._ext_ids: dict[str, dict[str, int]] = {}  # kind -> {uri: id} from the answer
        self._twcc_seq = random.getrandbits(16)
        self._next_sr = 0.0
        self.plis_received = self.firs_received = self.nacks_received = 0
        self.twcc_feedback_received = self.receiver_reports = self.remb_received = 0
        self.remb_bitrate: int | None = None
        self.rtcp_errors = 0
        self.srtp_errors = 0

    def build_offer(self) -> str:
        sections = []
        msid = (self.cname, self.cname + "-track")
        if self._audio_stream is not None:
            sections.append(MediaOffer(
                "audio", "0", "sendonly", ["opus"], ssrcs=[self._audio_stream.ssrc],
                extensions=[EXT_MID, EXT_TWCC], msid=(msid[0], msid[1] + "-a"), cname=self.cname,
            ))
        if self._video_streams:
            sections.append(MediaOffer(
                "video", str(len(sections)), "sendonly", [self.video_codec or "VP8"],
                ssrcs=[self._video_streams[0].ssrc] if not self.simulcast_rids else [],
                rids=self.simulcast_rids,
                extensions=[EXT_MID, EXT_TWCC] + ([EXT_RID] if self.simulcast_rids else []),
                msid=(msid[0], msid[1] + "-v"), cname=self.cname,
            ))
        return build_offer(
            sections, ice_ufrag=self._ice_ufrag, ice_pwd=self._ice_pwd,
            fingerprint_sha256=self._certificate.fingerprint_sha256(),
        )

    async def start(self) -> None:
        """POST the offer (201 expected, else WhipError), ICE + DTLS, then stream."""
        await self._connect(self.url, self.build_offer())

    def _on_answer(self, answer: Answer) -> None:
        for kind, streams in (("audio", [self._audio_stream]), ("video", self._video_streams)):
            live = [s for s in streams if s is not None]
            if not live:
                continue
            section = answer.kind(kind)
            if section is None:
                raise WhipError(201, f"answer rejected the {kind} section")
            codec = section.codec("opus" if kind == "audio" else self.video_codec or "VP8")
            if codec is None:
                raise WhipError(201, f"answer has no usable {kind} codec")
            self._ext_ids[kind] = section.extmaps
            for stream in live:
                stream.pt = codec.pt
                stream.codec = codec.name.upper()
                stream.mid = section.mid or ""

    def _on_connected(self, now: float) -> None:
        for stream in self._streams:
            stream.next_due = now
            stream.started_at = now
        self._next_sr = now + SENDER_REPORT_INTERVAL_S

    # --- sending ------------------------------------------------------------------------

    def _periodic(self, now: float) -> float:
        deadline = now + 1.0
        for stream in self._streams:
            if now - stream.next_due > MAX_CATCH_UP_S:
                skipped = int((now - stream.next_due) / stream.period)
                stream.frames += skipped
                stream.next_due += skipped * stream.period
            while stream.next_due <= now:
                if stream.kind == "video":
                    self._send_video_frame(stream, now)
                else:
                    self._send_audio_packet(stream)
                stream.next_due += stream.period
            deadline = min(deadline, stream.next_due)
        if now >= self._next_sr:
            self._send_sender_reports(now)
            self._next_sr = now + SENDER_REPORT_INTERVAL_S
        return min(deadline, self._next_sr)

    def _extension(self, stream: _SendStream, count_twcc: bool = True) -> bytes:
        """The packet's header extensions (mid, rid, transport-wide sequence number); with
        `count_twcc=False` a template of the same size that takes no sequence number."""
        ids = self._ext_ids.get(stream.kind, {})
        elements = []
        if EXT_MID in ids and stream.mid:
            elements.append((ids[EXT_MID], stream.mid.encode()))
        if EXT_RID in ids and stream.layer is not None and stream.layer.rid:
            elements.append((ids[EXT_RID], stream.layer.rid.encode()))
        if EXT_TWCC in ids:
            if count_twcc:
                self._twcc_seq = (self._twcc_seq + 1) & 0xFFFF
            elements.append((ids[EXT_TWCC], self._twcc_seq.to_bytes(2, "big") if count_twcc else b"\x00\x00"))
        return media.one_byte_extensions(elements) if elements else b""

    def _send_packet(self, stream: _SendStream, payload: bytes, ts: int, marker: bool) -> None:
        assert self._tx is not None
        stream.seq = (stream.seq + 1) & 0xFFFF
        packet = media.rtp_header(stream.pt, stream.seq, ts, stream.ssrc, marker, self._extension(stream)) + payload
        try:
            protected = self._tx.protect(packet)
        except Exception:
            self.srtp_errors += 1
            return
        stream.history[stream.seq & (HISTORY_SIZE - 1)] = (stream.seq, protected)
        stream.packets += 1
        stream.bytes += len(payload)
        self._send_media(stream, protected)

    def _send_media(self, stream: _SendStream, protected: bytes) -> None:
        if self._drop_rng is not None and stream.kind == "video" and self._drop_rng.random() < self.drop_rate:
            self.dropped_by_test += 1
            return
        self._send(protected)

    def _send_video_frame(self, stream: _SendStream, now: float) -> None:
        layer = stream.layer
        assert layer is not None
        keyframe = (
            stream.frames == 0 or stream.keyframe_requested
            or (self.keyframe_interval > 0 and now - stream.last_keyframe_at >= self.keyframe_interval - 1e-6)
        )
        if keyframe:
            stream.keyframe_requested = False
            stream.last_keyframe_at = now
            stream.keyframes += 1
        ts = stream.ts_base + int(stream.frames * VIDEO_CLOCK / self.fps)
        probe = media.probe(time.monotonic_ns(), stream.frames, layer.index)
        header_len = 12 + len(self._extension(stream, count_twcc=False))
        frame_bytes = max(1, layer.bitrate // 8 // max(1, int(self.fps)))
        max_payload = media.MAX_RTP_PACKET - header_len
        if stream.codec == "H264":
            payloads = media.h264_frame_payloads(
                keyframe=keyframe, width=layer.width, height=layer.height,
                frame_bytes=frame_bytes, max_payload=max_payload, probe_bytes=probe,
            )
        else:
            payloads = media.vp8_frame_payloads(
                keyframe=keyframe, width=layer.width, height=layer.height,
                picture_id=stream.picture_id, frame_bytes=frame_bytes, max_payload=max_payload,
                probe_bytes=probe,
            )
            stream.picture_id = (stream.picture_id + 1) & 0x7FFF
        last = len(payloads) - 1
        for index, payload in enumerate(payloads):
            self._send_packet(stream, payload, ts, index == last)
        stream.frames += 1

    def _send_audio_packet(self, stream: _SendStream) -> None:
        ts = stream.ts_base + stream.frames * int(AUDIO_CLOCK * AUDIO_PTIME_S)
        payload = media.opus_payload(
            AUDIO_PACKET_BYTES, media.probe(time.monotonic_ns(), stream.frames, media.AUDIO_LAYER)
        )
        self._send_packet(stream, payload, ts, stream.frames == 0)
        stream.frames += 1

    def _send_sender_reports(self, now: float) -> None:
        wall = time.time()
        packets: list[rtcp.RtcpPacket] = []
        for stream in self._streams:
            if not stream.packets:
                continue
            rtp_ts = (stream.ts_base + int((now - stream.started_at) * stream.clock)) & 0xFFFFFFFF
            packets.append(rtcp.SenderReport(
                stream.ssrc, rtcp.ntp_from_unix(wall), rtp_ts, stream.packets & 0xFFFFFFFF,
                stream.bytes & 0xFFFFFFFF,
            ))
        if packets:
            packets.append(rtcp.Sdes([(packets[0].ssrc, [(1, self.cname.encode())])]))  # type: ignore[union-attr]
            if self._rrtr is not None:
                # RFC 3611 §4.5: answer the receiver's RRTR with DLRR (as libwebrtc does)
                lrr, at = self._rrtr
                packets.append(rtcp.ExtendedReport(packets[0].ssrc, [rtcp.Dlrr([  # type: ignore[union-attr]
                    (self._rrtr_ssrc, lrr, int((now - at) * 65536) & 0xFFFFFFFF)])]))
            self._send_rtcp(rtcp.serialize(packets))

    # --- feedback -----------------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Send a keyframe on every layer with the next frame (as on PLI)."""
        for stream in self._video_streams:
            stream.keyframe_requested = True

    def _keyframe_for(self, media_ssrc: int) -> None:
        if self.ignore_pli:
            return
        stream = self._by_ssrc.get(media_ssrc)
        if stream is not None and stream.kind == "video":
            stream.keyframe_requested = True
        elif stream is None:
            self.request_keyframe()

    def _on_rtcp(self, index: int, data: bytes, addr: tuple[str, int]) -> None:
        assert self._rx is not None
        try:
            plain = self._rx.unprotect_rtcp_packet(data)
        except Exception:
            self.srtp_errors += 1
            return
        try:
            packets = rtcp.parse_compound(plain)
        except rtcp.RtcpError:
            self.rtcp_errors += 1
            return
        for packet in packets:
            if isinstance(packet, rtcp.Nack):
                self.nacks_received += 1
                self._retransmit(packet.media_ssrc, packet.lost)
            elif isinstance(packet, rtcp.Pli):
                self.plis_received += 1
                stream = self._by_ssrc.get(packet.media_ssrc)
                if stream is not None:
                    stream.plis += 1
                self._keyframe_for(packet.media_ssrc)
            elif isinstance(packet, rtcp.Fir):
                self.firs_received += 1
                for ssrc, _seq in packet.entries:
                    stream = self._by_ssrc.get(ssrc)
                    if stream is not None:
                        stream.firs += 1
                    self._keyframe_for(ssrc)
            elif isinstance(packet, rtcp.TransportCc):
                self.twcc_feedback_received += 1
            elif isinstance(packet, rtcp.Remb):
                self.remb_received += 1
                self.remb_bitrate = packet.bitrate
            elif isinstance(packet, (rtcp.ReceiverReport, rtcp.SenderReport)):
                self.receiver_reports += 1
            elif isinstance(packet, rtcp.ExtendedReport):
                for block in packet.blocks:
                    if isinstance(block, rtcp.Rrtr) and self._loop is not None:
                        self._rrtr = (rtcp.ntp_middle_32(block.ntp_timestamp), self._loop.time())
                        self._rrtr_ssrc = packet.ssrc

    def _retransmit(self, media_ssrc: int, lost: list[int]) -> None:
        stream = self._by_ssrc.get(media_ssrc)
        if stream is None:
            self._count_drop("nack-unknown-ssrc")
            return
        for seq in lost:
            stream.nacked += 1
            entry = stream.history[seq & (HISTORY_SIZE - 1)]
            if entry is not None and entry[0] == seq:
                stream.retransmits += 1
                self._send_media(stream, entry[1])
            else:
                stream.retransmit_misses += 1

    # --- stats --------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, Any]:
        layers = {(s.layer.rid if s.layer else "") or "video": s.as_dict() for s in self._video_streams}
        audio = self._audio_stream.as_dict() if self._audio_stream else None
        return {
            "layers": layers,
            "audio": audio,
            "packets_sent": sum(s.packets for s in self._streams),
            "bytes_sent": sum(s.bytes for s in self._streams),
            "keyframes_sent": sum(s.keyframes for s in self._video_streams),
            "plis_received": self.plis_received,
            "firs_received": self.firs_received,
            "nacks_received": self.nacks_received,
            "dropped_by_test": self.dropped_by_test,
            "nacked_packets": sum(s.nacked for s in self._streams),
            "retransmits": sum(s.retransmits for s in self._streams),
            "retransmit_misses": sum(s.retransmit_misses for s in self._streams),
            "twcc_feedback_received": self.twcc_feedback_received,
            "remb_received": self.remb_received,
            "remb_bitrate": self.remb_bitrate,
            "receiver_reports": self.receiver_reports,
            "srtp_profile": self.srtp_profile,
            "srtp_errors": self.srtp_errors,
            "rtcp_errors": self.rtcp_errors,
            "drops": dict(self.drops),
        }
