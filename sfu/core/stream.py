"""Streams, their published tracks and the incoming layers of each track.

A `Stream` is what one stream name carries: the current publisher's tracks, and the viewers that
watch it. It outlives a publisher: when a publisher reconnects under the same name, its new tracks
are matched to the old ones by kind and codec, and every viewer's subscription is re-attached
(re-based at the next keyframe) so the viewer sees one continuous stream.

Inputs: `bind_packet(...)` (an RTP packet with an SSRC nobody has bound yet), publisher and viewer
arrivals and departures from the session manager. The per-packet state is in fast-path `InStream`
objects; this module decides which SSRC is which layer of which track.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .. import _fastpath
from .keyframes import KeyframeRequester
from .negotiation import PublishedTrack

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
RRID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
VIDEO_ORIENTATION_URI = "urn:3gpp:video-orientation"
DD_URI = "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"

# Extensions whose values pass through from publisher to viewer (ids are remapped per viewer).
FORWARDED_EXTENSIONS = (AUDIO_LEVEL_URI, VIDEO_ORIENTATION_URI, DD_URI)

CODEC_IDS = {
    "opus": _fastpath.CODEC_AUDIO,
    "VP8": _fastpath.CODEC_VP8,
    "VP9": _fastpath.CODEC_VP9,
    "H264": _fastpath.CODEC_H264,
    "AV1": _fastpath.CODEC_AV1,
}

MAX_UNBOUND_SSRCS = 16  # SSRCs we try to bind per publisher before dropping the rest


@dataclass
class SenderReportInfo:
    """The publisher's last sender report for a layer (RFC 3550 §6.4.1)."""

    ntp: int
    rtp_timestamp: int
    received_at: float


@dataclass
class Layer:
    """One incoming encoding of a track (a simulcast layer, or the only one)."""

    rid: str | None
    ssrc: int
    stream: _fastpath.InStream
    rtx_ssrc: int | None = None
    rtx: _fastpath.InStream | None = None
    keyframes: KeyframeRequester = field(default_factory=KeyframeRequester)
    seen_keyframes: int = 0
    last_sr: SenderReportInfo | None = None
    # receiver-report book-keeping (RFC 3550 A.3)
    expected_prior: int = 0
    received_prior: int = 0

    def poll_keyframe(self, now: float) -> None:
        if self.stream.keyframes != self.seen_keyframes:
            self.seen_keyframes = self.stream.keyframes
            # when it arrived, not when we noticed: a keyframe older than the request answers nothing
            self.keyframes.keyframe_arrived(self.stream.last_keyframe_at)


@dataclass
class Track:
    """A published track: the negotiated description and the layers seen so far."""

    index: int
    spec: PublishedTrack
    layers: list[Layer] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def codec_id(self) -> int:
        return CODEC_IDS[self.spec.codec.name]

    def layer_for_ssrc(self, ssrc: int) -> Layer | None:
        for layer in self.layers:
            if layer.ssrc == ssrc or layer.rtx_ssrc == ssrc:
                return layer
        return None

    def layer_for_rid(self, rid: str) -> Layer | None:
        for layer in self.layers:
            if layer.rid == rid:
                return layer
        return None

    def best_layer(self) -> Layer | None:
        """The layer a viewer gets by default: the one carrying the most bytes so far."""
        if not self.layers:
            return None
        return max(self.layers, key=lambda layer: layer.stream.bytes)


def parse_extensions(packet: bytes) -> dict[int, bytes]:
    """RFC 8285 header extensions of a plaintext RTP packet, id -> value (slow path only)."""
    if len(packet) < 12 or not packet[0] & 0x10:
        return {}
    offset = 12 + 4 * (packet[0] & 0x0F)
    if offset + 4 > len(packet):
        return {}
    profile, words = struct.unpack_from("!HH", packet, offset)
    start, end = offset + 4, offset + 4 + 4 * words
    if end > len(packet):
        return {}
    found: dict[int, bytes] = {}
    i = start
    if profile == 0xBEDE:
        while i < end:
            if packet[i] == 0:
                i += 1
                continue
            ext_id, length = packet[i] >> 4, (packet[i] & 0x0F) + 1
            if ext_id == 15:
                break
            found[ext_id] = packet[i + 1 : i + 1 + length]
            i += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while i + 1 < end:
            if packet[i] == 0:
                i += 1
                continue
            ext_id, length = packet[i], packet[i + 1]
            found[ext_id] = packet[i + 2 : i + 2 + length]
            i += 2 + length
    return found


class Stream:
    """Everything under one stream name: the current publisher's tracks and the viewers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.publisher: object | None = None  # the PublisherSession, when live
        self.tracks: list[Track] = []
        self.viewers: set[object] = set()
        self.generation = 0  # bumps at every new publisher

    @property
    def live(self) -> bool:
        return self.publisher is not None and bool(self.tracks)

    def set_publisher(self, publisher: object, tracks: tuple[PublishedTrack, ...]) -> None:
        self.publisher = publisher
        self.tracks = [Track(i, spec) for i, spec in enumerate(tracks)]
        self.generation += 1

    def clear_publisher(self, publisher: object) -> bool:
        if self.publisher is not publisher:
            return False
        self.publisher = None
        self.tracks = []
        return True

    def bind_packet(self, endpoint: _fastpath.Endpoint, packet: bytes) -> tuple[Layer, _fastpath.InStream] | None:
        """Find which track/layer an unbound SSRC belongs to; create and bind its InStream.

        Order (RFC 8843 §9.2, RFC 8852): declared SSRCs, then the MID + RID / repaired-RID header
        extensions, then a unique payload type. Returns None when the packet cannot be placed.
        """
        if len(packet) < 12:
            return None
        pt = packet[1] & 0x7F
        ssrc = struct.unpack_from("!I", packet, 8)[0]
        exts = parse_extensions(packet)
        track, rid, is_rtx = self._classify(ssrc, pt, exts)
        if track is None:
            return None
        codec = track.spec.codec
        if is_rtx:
            layer = track.layer_for_rid(rid) if rid is not None else self._layer_for_rtx_ssrc(track, ssrc)
            if layer is None:
                return None
            rtx = _fastpath.InStream(layer, ssrc, track.codec_id, codec.rtx_payload_type or 0, codec.clock_rate)
            rtx.set_rtx_of(layer.stream)
            layer.rtx_ssrc = ssrc
            layer.rtx = rtx
            endpoint.bind(ssrc, rtx)
            return layer, rtx
        layer = track.layer_for_rid(rid) if rid is not None else None
        if layer is None:
            if len(track.layers) >= max(1, len(track.spec.rids)) and rid is None:
                # a new SSRC for a non-simulcast track: the publisher restarted its stream
                track.layers.clear()
            layer = Layer(rid, ssrc, _fastpath.InStream(None, ssrc, track.codec_id, codec.payload_type, codec.clock_rate))
            layer.stream.owner = layer
            track.layers.append(layer)
        else:
            layer.ssrc = ssrc
            layer.stream = _fastpath.InStream(layer, ssrc, track.codec_id, codec.payload_type, codec.clock_rate)
        endpoint.bind(ssrc, layer.stream)
        return layer, layer.stream

    def bound_stream(self, ssrc: int) -> _fastpath.InStream | None:
        """The InStream already bound for `ssrc` (media or RTX), if any: the later packets of the
        receive batch that carried a new SSRC's first packet also arrive as unbound."""
        for track in self.tracks:
            for layer in track.layers:
                if layer.ssrc == ssrc:
                    return layer.stream
                if layer.rtx_ssrc == ssrc and layer.rtx is not None:
                    return layer.rtx
        return None

    def _layer_for_rtx_ssrc(self, track: Track, rtx_ssrc: int) -> Layer | None:
        for media, rtx in track.spec.rtx_ssrcs.items():
            if rtx == rtx_ssrc:
                return track.layer_for_ssrc(media)
        return track.layers[0] if len(track.layers) == 1 else None

    def _classify(self, ssrc: int, pt: int, exts: dict[int, bytes]) -> tuple[Track | None, str | None, bool]:
        for track in self.tracks:
            spec = track.spec
            if ssrc in spec.ssrcs:
                index = spec.ssrcs.index(ssrc)
                rid = spec.rids[index] if spec.rids and index < len(spec.rids) else None
                return track, rid, False
            if ssrc in spec.rtx_ssrcs.values():
                return track, None, True
        for track in self.tracks:
            spec = track.spec
            mid_id = spec.extensions.get(MID_URI)
            if mid_id and mid_id in exts and exts[mid_id].decode("ascii", "replace") == spec.mid:
                rid_id = spec.extensions.get(RID_URI)
                rrid_id = spec.extensions.get(RRID_URI)
                if rrid_id and rrid_id in exts:
                    return track, exts[rrid_id].decode("ascii", "replace"), True
                rid = exts[rid_id].decode("ascii", "replace") if rid_id and rid_id in exts else None
                if spec.codec.rtx_payload_type is not None and pt == spec.codec.rtx_payload_type:
                    return track, rid, True
                return track, rid, False
        candidates = [t for t in self.tracks if t.spec.codec.payload_type == pt]
        if len(candidates) == 1:
            return candidates[0], None, False
        rtx_candidates = [t for t in self.tracks if t.spec.codec.rtx_payload_type == pt]
        if len(rtx_candidates) == 1:
            return rtx_candidates[0], None, True
        return None, None, False
