"""PacketViewer: a WHEP client that receives, counts and timestamps RTP without decoding.

Driven by: `start()` / `stop()`, datagrams and one timer. Per packet (in
`datagram_received`, no coroutine): one SRTP unprotect, a struct unpack of the header,
sequence bookkeeping (gaps, duplicates, reordering), a keyframe sniff on frame starts and
the probe lookup for latency. Periodic work, like a browser's receiver: receiver reports
every second, generic NACKs for gaps after a reorder wait (retried), transport-wide CC
feedback every 100 ms when the answer negotiated it.
"""

from __future__ import annotations

import random
import struct
import time
from collections import deque
from typing import Any

from pathlib import Path

import aiohttp
from yarl import URL

from sfu.core.certificate import Certificate
from sfu.testing import media
from sfu.testing._client import WhepError, _Client
from sfu.testing.depacketize import EncodedFrame
from sfu.testing.frames import KEEP_FRAMES, DecodedFrame, FrameReceiver
from sfu.testing.sdp import EXT_MID, EXT_TWCC, Answer, MediaOffer, build_offer
from sfu.wire import rtcp
from sfu.wire.twcc_feedback import FeedbackBuilder

NACK_REORDER_WAIT_S = 0.02  # wait for reordering before the first request
NACK_RETRY_INTERVAL_S = 0.05  # between requests for the same packet (loopback-scale RTT)
NACK_MAX_TRIES = 10  # then the packet counts as lost
MAX_TRACKED_GAP = 512  # a jump larger than this is counted, but only its tail is NACKed
RECEIVER_REPORT_INTERVAL_S = 1.0
TWCC_FEEDBACK_INTERVAL_S = 0.1
LATENCY_SAMPLES_MAX = 4096  # per kind, most recent kept
FRAME_EXPIRE_INTERVAL_S = 0.1  # with frame reassembly: check for gaps given up this often
FRAME_PLI_INTERVAL_S = 0.5  # a viewer that lost a frame asks for a keyframe at most this often
SEEN_RING = 2048  # per-SSRC duplicate detection window (power of two)
assert SEEN_RING & (SEEN_RING - 1) == 0

_RTP = struct.Struct("!BBHII")
_HH = struct.Struct("!HH")
_H = struct.Struct("!H")


def _find_extension(data: bytes, start: int, end: int, profile: int, wanted: int) -> int:
    """Offset of the value of extension `wanted` (RFC 8285 one- or two-byte form), or -1."""
    pos = start
    if profile == 0xBEDE:
        while pos < end:
            byte = data[pos]
            if byte == 0:
                pos += 1
                continue
            ext_id = byte >> 4
            if ext_id == 15:
                return -1
            if ext_id == wanted:
                return pos + 1
            pos += 2 + (byte & 0x0F)
    elif profile & 0xFFF0 == 0x1000:
        while pos + 1 < end:
            ext_id = data[pos]
            if ext_id == 0:
                pos += 1
                continue
            if ext_id == wanted:
                return pos + 2
            pos += 2 + data[pos + 1]
    return -1


class _RecvStream:
    __slots__ = (
        "ssrc", "kind", "codec", "clock", "nack", "base", "highest", "received", "bytes",
        "gaps", "recovered", "repaired", "duplicates", "out_of_order", "late", "lost_final",
        "padding", "rtx", "keyframes", "last_keyframe_ts", "resolution", "missing", "seen",
        "jitter", "last_transit", "expected_prior", "received_prior", "last_sr_mid",
        "last_sr_at", "first_packet_at", "frames", "last_frame", "layers", "latency",
        "source", "first_keyframe_at", "packets_before_keyframe",
    )

    def __init__(self, ssrc: int, kind: str, codec: str, clock: int, nack: bool, latency: deque[int]) -> None:
        self.ssrc = ssrc
        self.kind = kind
        self.codec = codec
        self.clock = clock
        self.nack = nack
        self.base = -1
        self.highest = -1
        self.received = self.bytes = 0
        self.gaps = self.recovered = self.repaired = self.duplicates = 0
        self.out_of_order = self.late = self.lost_final = self.padding = self.rtx = 0
        self.keyframes = 0
        self.last_keyframe_ts = -1
        self.resolution: tuple[int, int] | None = None
        self.missing: dict[int, list[float]] = {}  # ext seq -> [next NACK due, tries]
        self.seen = [-1] * SEEN_RING
        self.jitter = 0.0
        self.last_transit: int | None = None
        self.expected_prior = self.received_prior = 0
        self.last_sr_mid = 0
        self.last_sr_at = 0.0
        self.first_packet_at: float | None = None
        self.frames = 0
        self.last_frame = -1
        self.layers: dict[int, int] = {}  # probe layer index -> frames
        self.latency = latency
        self.source: tuple[str, int] | None = None
        self.first_keyframe_at: float | None = None
        self.packets_before_keyframe = 0  # media packets that arrived before the first keyframe

    def open_gap(self, highest: int, ext: int, due: float) -> None:
        """`ext` arrived after `highest`: the numbers between are missing, NACK-able from `due`."""
        self.gaps += ext - highest - 1
        for lost in range(max(highest + 1, ext - MAX_TRACKED_GAP), ext):
            self.missing[lost] = [due, 0]

    def arrived_late(self, ext: int) -> None:
        """`ext` arrived below the highest number: a repair, a reordering, or a late duplicate."""
        entry = self.missing.pop(ext, None)
        self.out_of_order += 1
        if entry is not None:
            self.recovered += 1
            if entry[1]:
                self.repaired += 1
        else:
            self.late += 1


class PacketViewer(_Client):
    """WHEP viewer that counts what it receives; `stats` and `socket_stats` are the oracle."""

    _error_class = WhepError

    def __init__(
        self, whep_url: str, token: str | None = None, *, audio: bool = True, video: bool = True,
        video_codecs: tuple[str, ...] = ("VP8", "H264", "VP9", "AV1"), query: dict[str, str] | None = None,
        send_nack: bool = True, send_twcc: bool = True, rtx: bool = False,
        drop_rate: float = 0.0, drop_seed: int | None = None,
        srtp_profiles: tuple[str, ...] = ("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"),
        local_addr: str = "127.0.0.1", extra_check_addrs: int = 0, connect_timeout: float = 10.0,
        http: aiohttp.ClientSession | None = None, certificate: Certificate | None = None,
        wait_for_publisher: float = 0.0, frames: bool = False, decode: bool = False,
        keep_frames: int = KEEP_FRAMES,
    ) -> None:
        url = str(URL(whep_url).update_query(query)) if query else whep_url
        super().__init__(
            url, token, srtp_profiles=srtp_profiles, local_addr=local_addr,
            extra_check_addrs=extra_check_addrs, connect_timeout=connect_timeout, http=http,
            certificate=certificate,
        )
        if not audio and not video:
            raise ValueError("nothing to receive")
        self.wait_for_publisher = wait_for_publisher
        # reassembly into encoded frames (and decoding with PyAV): see `frames.FrameReceiver`
        self.receiver: FrameReceiver | None = (
            FrameReceiver(decode=decode, keep=keep_frames) if frames or decode else None
        )
        self.audio = audio
        self.video = video
        self.video_codecs = tuple(video_codecs)
        self.send_nack = send_nack
        self.send_twcc = send_twcc
        self.rtx = rtx
        # simulated loss: this share of the video RTP datagrams (RTX included) is discarded on
        # arrival, before SRTP, as if the network had lost it (seeded: the same run every time)
        self.drop_rate = drop_rate
        self._drop_rng = random.Random(drop_seed) if drop_rate > 0 else None
        self.dropped_by_test = 0
        self.ssrc = random.getrandbits(32)  # our RTCP sender SSRC
        self._pt: dict[int, tuple[str, str, int, bool, bool]] = {}  # pt -> kind, codec, clock, nack, rtx
        self._rtx_to_media: dict[int, int] = {}
        self.rate_limit_bps: float | None = None  # see set_rate_limit
        self.rate_limit_queue_s = 0.3
        self.rate_limited_drops = 0
        self._link_free_at = 0.0
        self._streams: dict[int, _RecvStream] = {}
        self._latency: dict[str, deque[int]] = {
            "audio": deque(maxlen=LATENCY_SAMPLES_MAX), "video": deque(maxlen=LATENCY_SAMPLES_MAX)}
        self._twcc_id = 0
        self._twcc_highest = -1
        self._twcc_arrivals: list[tuple[int, int]] = []  # (extended transport seq, arrival_us)
        self._twcc_feedback = FeedbackBuilder(self.ssrc, reported=-1)  # -1: nothing reported yet
        self._next_rr = 0.0
        self._next_twcc = 0.0
        self.nacks_sent = self.nacked_seqs = self.plis_sent = 0
        self.rr_sent = self.twcc_sent = self.sr_received = self.rtcp_received = 0
        self.srtp_errors = self.srtp_replays = 0
        self._next_frame_pli = 0.0

    def build_offer(self) -> str:
        sections = []
        if self.audio:
            sections.append(MediaOffer("audio", "0", "recvonly", ["opus"], extensions=[EXT_MID, EXT_TWCC]))
        if self.video:
            sections.append(MediaOffer(
                "video", str(len(sections)), "recvonly", list(self.video_codecs), rtx=self.rtx,
                extensions=[EXT_MID, EXT_TWCC],
            ))
        return build_offer(
            sections, ice_ufrag=self._ice_ufrag, ice_pwd=self._ice_pwd,
            fingerprint_sha256=self._certificate.fingerprint_sha256(),
        )

    async def start(self) -> None:
        """POST the offer (201 expected, else WhepError(status, body)), ICE + DTLS + SRTP.

        With `wait_for_publisher=T`, a 409 (stream not live) is retried as its Retry-After says
        until T seconds have passed, so a viewer may start before its publisher."""
        await self._connect(self.url, self.build_offer())

    # --- what a test asks ---------------------------------------------------------------

    async def wait_for_frames(self, count: int, timeout: float = 10.0, *, kind: str = "video",
                              decoded: bool | None = None) -> None:
        """Return once `count` frames of `kind` were received: reassembled ones with `frames=True`
        or `decode=True` (decoded ones with `decode=True`, or `decoded=True`), else counted from
        the packets' probes (synthetic publishers only). TimeoutError with stats at the deadline."""
        receiver = self.receiver
        if receiver is None:
            await self.wait_for(lambda: self._kind_frames(kind) >= count, timeout)
            return
        counts = receiver.decoded_counts if (decoded if decoded is not None else receiver.decode) else receiver.counts
        await self.wait_for(lambda: counts[kind] >= count, timeout)

    def _kind_frames(self, kind: str) -> int:
        return sum(s.frames for s in self._streams.values() if s.kind == kind)

    def encoded_frames(self, kind: str = "video") -> list[EncodedFrame]:
        """The last `keep_frames` reassembled frames of `kind` (needs `frames=True` or `decode=True`)."""
        if self.receiver is None:
            raise RuntimeError("PacketViewer(frames=True) or (decode=True) keeps frames")
        return list(self.receiver.encoded[kind])

    def decoded_frames(self, kind: str = "video") -> list[DecodedFrame]:
        """The last `keep_frames` decoded frames of `kind`: `.frame` is an av.VideoFrame /
        av.AudioFrame, `.source` the EncodedFrame it came from (needs `decode=True`)."""
        if self.receiver is None or not self.receiver.decode:
            raise RuntimeError("PacketViewer(decode=True) decodes frames")
        return list(self.receiver.decoded[kind])

    def write_video(self, path: str | Path) -> Path:
        """Write the received video to `path` (IVF for VP8/VP9/AV1, Annex-B for H.264); see
        `FrameReceiver.write_video`."""
        if self.receiver is None:
            raise RuntimeError("PacketViewer(frames=True) or (decode=True) keeps frames")
        return self.receiver.write_video(path)

    async def select_layer(self, layer: str | None = None, *, max_height: int | None = None,
                           paused: bool | None = None) -> None:
        """Ask the server for a simulcast layer (`layer="h"`), a height cap, a pause, or
        automatic selection (no argument): POST `{resource}/layer` (sfu's extension of WHEP).
        Raises WhepError on a refusal."""
        if self.resource_url is None or self._http is None:
            raise RuntimeError("not connected")
        body: dict[str, object] = {}
        if layer is not None:
            body["layer"] = layer
        if max_height is not None:
            body["max_height"] = max_height
        if paused is not None:
            body["paused"] = paused
        async with self._http.post(self.resource_url + "/layer", json=body, headers=self._headers()) as response:
            text = await response.text()
            if response.status >= 300:
                raise WhepError(response.status, text, dict(response.headers))

    def _on_answer(self, answer: Answer) -> None:
        for section in answer.media:
            if section.rejected or section.kind not in ("audio", "video"):
                continue
            by_pt = {c.pt: c for c in section.codecs}
            for codec in section.codecs:
                name = codec.name.upper()
                is_rtx = name == "RTX"
                if is_rtx:
                    apt = next((p.split("=")[1] for p in codec.fmtp.split(";") if p.strip().startswith("apt=")), None)
                    target = by_pt.get(int(apt)) if apt else None
                    feedback = target.feedback if target else []
                else:
                    feedback = codec.feedback
                nack = self.send_nack and "nack" in feedback
                self._pt[codec.pt] = (section.kind, name, codec.clock_rate, nack, is_rtx)
            for semantics, ssrcs in section.ssrc_groups:
                if semantics == "FID" and len(ssrcs) == 2:
                    self._rtx_to_media[ssrcs[1]] = ssrcs[0]
            if self.send_twcc and EXT_TWCC in section.extmaps:
                self._twcc_id = section.extmaps[EXT_TWCC]

    def _on_connected(self, now: float) -> None:
        self._next_rr = now + RECEIVER_REPORT_INTERVAL_S
        self._next_twcc = now + TWCC_FEEDBACK_INTERVAL_S

    # --- receive path -------------------------------------------------------------------

    def set_rate_limit(self, bps: float | None, queue_s: float = 0.3) -> None:
        """Emulate a slow downlink in the receive path: a FIFO bottleneck of `bps` with at most
        `queue_s` of queue. Packets that would wait longer are dropped (gaps, NACKs); the others
        count as arriving when they would have left the queue, in the transport-cc feedback. None
        removes the limit."""
        self.rate_limit_bps = bps
        self.rate_limit_queue_s = queue_s
        self._link_free_at = 0.0

    def _rate_limited(self, size: int) -> int | None:
        """Queueing delay in µs this packet gets from the emulated bottleneck, None: dropped."""
        assert self._loop is not None
        now = self._loop.time()
        depart = max(now, self._link_free_at) + (size + 28) * 8 / self.rate_limit_bps  # type: ignore[operator]
        if depart - now > self.rate_limit_queue_s:
            self.rate_limited_drops += 1
            return None
        self._link_free_at = depart
        return int((depart - now) * 1e6)

    def _on_rtp(self, index: int, data: bytes, addr: tuple[str, int]) -> None:
        assert self._rx is not None
        if self._drop_rng is not None and len(data) >= 12:
            info = self._pt.get(data[1] & 0x7F)
            if info is not None and info[0] == "video" and self._drop_rng.random() < self.drop_rate:
                self.dropped_by_test += 1
                return
        queue_us = 0
        if self.rate_limit_bps:
            limited = self._rate_limited(len(data))
            if limited is None:
                return
            queue_us = limited
        try:
            plain = self._rx.unprotect(data)
        except Exception as exc:  # pylibsrtp.Error or the fast path's error type
            if "replay" in str(exc):  # a duplicate the SRTP replay check caught
                self.srtp_replays += 1
                replayed = self._streams.get(_RTP.unpack_from(data)[4]) if len(data) >= 12 else None
                if replayed is not None:
                    replayed.duplicates += 1
            else:
                self.srtp_errors += 1
            return
        b0, b1, seq, ts, ssrc = _RTP.unpack_from(plain)
        info = self._pt.get(b1 & 0x7F)
        if info is None:
            self._count_drop("unknown-pt")
            return
        kind, codec, clock, nack, is_rtx = info
        offset = 12 + 4 * (b0 & 0x0F)
        now_ns = time.monotonic_ns()
        if b0 & 0x10:
            profile, words = _HH.unpack_from(plain, offset)
            ext_end = offset + 4 + 4 * words
            if self._twcc_id:
                pos = _find_extension(plain, offset + 4, ext_end, profile, self._twcc_id)
                if pos >= 0:
                    self._record_twcc(_H.unpack_from(plain, pos)[0], now_ns // 1000 + queue_us)
            offset = ext_end
        end = len(plain) - (plain[-1] if b0 & 0x20 else 0)
        if is_rtx:
            media_ssrc = self._rtx_to_media.get(ssrc)
            if media_ssrc is None:
                candidates = [s for s in self._streams.values() if s.kind == kind]
                media_ssrc = candidates[0].ssrc if len(candidates) == 1 else None
            if media_ssrc is None or end - offset < 2:
                self._count_drop("rtx-padding" if media_ssrc is not None else "rtx-unknown-ssrc")
                return
            seq = _H.unpack_from(plain, offset)[0]
            offset += 2
            ssrc = media_ssrc
        stream = self._streams.get(ssrc)
        if stream is None:
            stream = self._new_stream(ssrc, kind, codec, clock, nack, addr)
        if is_rtx:
            stream.rtx += 1
        assert self._loop is not None
        now = self._loop.time()
        # sequence bookkeeping (RFC 3550 A.1 style extension to 64 bits)
        highest = stream.highest
        if highest < 0:
            ext = seq
            stream.base = seq
        else:
            delta = (seq - highest) & 0xFFFF
            ext = highest + delta if delta < 0x8000 else highest + delta - 0x10000
        slot = ext & (SEEN_RING - 1)
        fresh = ext > highest
        if fresh:
            if highest >= 0 and ext > highest + 1:
                due = now + NACK_REORDER_WAIT_S
                stream.open_gap(highest, ext, due)
                self._arm(due)
            stream.highest = ext
        elif stream.seen[slot] == ext:
            stream.duplicates += 1
            return
        else:
            stream.arrived_late(ext)
        stream.seen[slot] = ext
        stream.received += 1
        if end <= offset:
            stream.padding += 1
            return
        stream.bytes += end - offset
        if self.receiver is not None:
            self.receiver.on_packet(kind, codec, ssrc, ext, ts, bool(b1 & 0x80), plain[offset:end], now)
        if fresh:  # RFC 3550 A.8 interarrival jitter, on in-order packets only
            transit = (now_ns * clock) // 1_000_000_000 - ts
            if stream.last_transit is not None:
                d = abs(transit - stream.last_transit)
                stream.jitter += (d - stream.jitter) / 16.0
            stream.last_transit = transit
        if kind == "video":
            first = plain[offset]
            if codec == "VP8":
                if first & 0x10:
                    is_key, width, height = media.vp8_is_keyframe(plain[offset:end])
                    if is_key:
                        if width:
                            stream.resolution = (width, height)
                        self._keyframe(stream, ts, now)
            elif codec == "H264" and (first & 0x1F) in (5, 7, 24, 28):
                payload = plain[offset:end]
                if media.h264_is_keyframe(payload):
                    size = media.h264_keyframe_size(payload)
                    if size:
                        stream.resolution = size
                    self._keyframe(stream, ts, now)
            if not stream.keyframes:
                stream.packets_before_keyframe += 1
        found = media.find_probe(plain, offset)
        if found is not None:
            send_ns, frame, layer = found
            if fresh and not is_rtx:
                stream.latency.append(now_ns - send_ns)
            if frame != stream.last_frame:
                stream.last_frame = frame
                stream.frames += 1
                stream.layers[layer] = stream.layers.get(layer, 0) + 1

    @staticmethod
    def _keyframe(stream: _RecvStream, ts: int, now: float) -> None:
        if stream.first_keyframe_at is None:
            stream.first_keyframe_at = now
        if ts != stream.last_keyframe_ts:
            stream.last_keyframe_ts = ts
            stream.keyframes += 1

    def _new_stream(self, ssrc: int, kind: str, codec: str, clock: int, nack: bool, addr: tuple[str, int]) -> _RecvStream:
        stream = _RecvStream(ssrc, kind, codec, clock, nack, self._latency[kind])
        assert self._loop is not None
        stream.first_packet_at = self._loop.time()
        stream.source = addr
        self._streams[ssrc] = stream
        return stream

    def _record_twcc(self, seq: int, arrival_us: int) -> None:
        highest = self._twcc_highest
        if highest < 0:
            ext = seq
        else:
            delta = (seq - highest) & 0xFFFF
            ext = highest + delta if delta < 0x8000 else highest + delta - 0x10000
        if ext > highest:
            self._twcc_highest = ext
        self._twcc_arrivals.append((ext, arrival_us))

    def _on_rtcp(self, index: int, data: bytes, addr: tuple[str, int]) -> None:
        assert self._rx is not None and self._loop is not None
        try:
            packets = rtcp.parse_compound(self._rx.unprotect_rtcp_packet(data))
        except Exception:
            self.srtp_errors += 1
            return
        self.rtcp_received += 1
        now = self._loop.time()
        for packet in packets:
            if isinstance(packet, rtcp.SenderReport):
                self.sr_received += 1
                stream = self._streams.get(packet.ssrc)
                if stream is not None:
                    stream.last_sr_mid = rtcp.ntp_middle_32(packet.ntp_timestamp)
                    stream.last_sr_at = now

    # --- periodic feedback --------------------------------------------------------------

    def _periodic(self, now: float) -> float:
        deadline = min(self._next_rr, self._next_twcc if self._twcc_id else now + 1.0)
        if self.receiver is not None:
            self.receiver.expire(now)
            if self.receiver.want_keyframe and now >= self._next_frame_pli:
                self._next_frame_pli = now + FRAME_PLI_INTERVAL_S
                self.request_keyframe()
            deadline = min(deadline, now + FRAME_EXPIRE_INTERVAL_S)
        for stream in self._streams.values():
            if not stream.missing:
                continue
            due = []
            for ext, entry in list(stream.missing.items()):
                if entry[0] > now:
                    deadline = min(deadline, entry[0])
                    continue
                if not stream.nack or entry[1] >= NACK_MAX_TRIES:
                    del stream.missing[ext]
                    stream.lost_final += 1
                    continue
                entry[1] += 1
                entry[0] = now + NACK_RETRY_INTERVAL_S
                deadline = min(deadline, entry[0])
                due.append(ext & 0xFFFF)
            if due:
                self.nacks_sent += 1
                self.nacked_seqs += len(due)
                self._send_rtcp(rtcp.serialize([rtcp.Nack(self.ssrc, stream.ssrc, due)]))
        if now >= self._next_rr:
            self._send_receiver_report(now)
            self._next_rr = now + RECEIVER_REPORT_INTERVAL_S
        if self._twcc_id and now >= self._next_twcc:
            self._send_twcc()
            self._next_twcc = now + TWCC_FEEDBACK_INTERVAL_S
        return min(deadline, self._next_rr)

    def _send_receiver_report(self, now: float) -> None:
        blocks = []
        for stream in list(self._streams.values())[:31]:
            if stream.highest < 0:
                continue
            expected = stream.highest - stream.base + 1
            lost = max(-0x800000, min(0x7FFFFF, expected - stream.received))
            expected_interval = expected - stream.expected_prior
            received_interval = stream.received - stream.received_prior
            stream.expected_prior, stream.received_prior = expected, stream.received
            lost_interval = expected_interval - received_interval
            fraction = (lost_interval << 8) // expected_interval if expected_interval > 0 and lost_interval > 0 else 0
            dlsr = int((now - stream.last_sr_at) * 65536) if stream.last_sr_mid else 0
            blocks.append(rtcp.ReportBlock(
                stream.ssrc, min(fraction, 255), lost, stream.highest & 0xFFFFFFFF,
                int(stream.jitter), stream.last_sr_mid, dlsr,
            ))
        self.rr_sent += 1
        self._send_rtcp(rtcp.serialize([rtcp.ReceiverReport(self.ssrc, blocks)]))

    def _send_twcc(self) -> None:
        if not self._twcc_arrivals:
            return
        arrivals, self._twcc_arrivals = self._twcc_arrivals, []
        media_ssrc = next(iter(self._streams), 0)
        # drops what an earlier feedback reported, and duplicates (the first arrival counts)
        for packet in self._twcc_feedback.build(media_ssrc, arrivals):
            self.twcc_sent += 1
            self._send_rtcp(rtcp.serialize([packet]))

    def request_keyframe(self) -> None:
        """Send a PLI (RFC 4585 §6.3.1) for every video SSRC received so far."""
        packets: list[rtcp.RtcpPacket] = [
            rtcp.Pli(self.ssrc, s.ssrc) for s in self._streams.values() if s.kind == "video"
        ]
        if packets:
            self.plis_sent += len(packets)
            self._send_rtcp(rtcp.serialize(packets))

    # --- stats --------------------------------------------------------------------------

    def _kind_stats(self, kind: str) -> dict[str, Any]:
        streams = [s for s in self._streams.values() if s.kind == kind]
        firsts = [s.first_packet_at for s in streams if s.first_packet_at is not None]
        layers: dict[int, int] = {}
        for s in streams:
            for layer, frames in s.layers.items():
                layers[layer] = layers.get(layer, 0) + frames
        gaps = sum(s.gaps for s in streams)
        recovered = sum(s.recovered for s in streams)
        return {
            "packets": sum(s.received for s in streams),
            "bytes": sum(s.bytes for s in streams),
            "frames": sum(s.frames for s in streams),
            "gaps": gaps,
            "recovered": recovered,
            "repaired": sum(s.repaired for s in streams),
            "lost": gaps - recovered,  # still missing now (includes those being NACKed)
            "lost_final": sum(s.lost_final for s in streams),  # given up on
            "duplicates": sum(s.duplicates for s in streams),
            "out_of_order": sum(s.out_of_order for s in streams),
            "late": sum(s.late for s in streams),
            "padding": sum(s.padding for s in streams),
            "rtx": sum(s.rtx for s in streams),
            "keyframes": sum(s.keyframes for s in streams),
            "resolution": next((s.resolution for s in streams if s.resolution), None),
            "layers": layers,
            "first_packet_at": min(firsts) if firsts else None,
            "first_keyframe_at": min(
                (s.first_keyframe_at for s in streams if s.first_keyframe_at is not None), default=None
            ),
            "packets_before_keyframe": sum(s.packets_before_keyframe for s in streams),
            "latency_ns": list(self._latency[kind]),
            "ssrcs": [s.ssrc for s in streams],
            "sources": sorted({s.source for s in streams if s.source}),
            "jitter": max((s.jitter for s in streams), default=0.0),
        }

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "audio": self._kind_stats("audio"),
            "video": self._kind_stats("video"),
            "nacks_sent": self.nacks_sent,
            "nacked_seqs": self.nacked_seqs,
            "plis_sent": self.plis_sent,
            "rr_sent": self.rr_sent,
            "twcc_sent": self.twcc_sent,
            "sr_received": self.sr_received,
            "rtcp_received": self.rtcp_received,
            "srtp_profile": self.srtp_profile,
            "srtp_errors": self.srtp_errors,
            "srtp_replays": self.srtp_replays,
            "dropped_by_test": self.dropped_by_test,
            "started_at": self.started_at,
            "connected_at": self.connected_at,
            "drops": dict(self.drops),
            "frames": self.receiver.stats() if self.receiver is not None else None,
        }
