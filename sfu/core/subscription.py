"""One published track as forwarded to one viewer.

Inputs: `attach(track, layer, now)` when the source layer is chosen or changes (publisher arrived,
reconnected, layer switch), `detach()` when the publisher leaves. The per-packet rewrite state is a
fast-path `OutTrack`; this object decides which `InStream` feeds it and when it must re-base.
"""

from __future__ import annotations

import secrets

from .. import _fastpath
from .negotiation import SubscribedTrack
from .stream import ABS_SEND_TIME_URI, FORWARDED_EXTENSIONS, TWCC_URI, Layer, Track


class Subscription:
    """The viewer side of one track: its OutTrack, and the layer currently feeding it."""

    def __init__(self, endpoint: _fastpath.Endpoint, spec: SubscribedTrack, kind: str, clock_rate: int) -> None:
        self.spec = spec
        self.kind = kind
        self.out = _fastpath.OutTrack(
            endpoint,
            spec.ssrc,
            spec.payload_type,
            clock_rate,
            kind == "video",
            secrets.randbits(15),  # RFC 3550 §5.1: random initial sequence number (low half: no early wrap)
            secrets.randbits(32),
            self,
        )
        self.out.twcc_id = spec.extensions.get(TWCC_URI, 0) if spec.transport_cc else 0
        self.out.abs_send_time_id = spec.extensions.get(ABS_SEND_TIME_URI, 0)
        self.track: Track | None = None
        self.layer: Layer | None = None
        self.pending_layer: Layer | None = None  # a simulcast switch waiting for its keyframe
        self.switches = 0

    @property
    def source_index(self) -> int:
        return self.spec.source_index

    def attach(self, track: Track, layer: Layer) -> None:
        """Feed this subscription from `layer` from its next keyframe on (audio: next packet)."""
        if self.layer is layer and layer.stream is self._source_stream:
            return
        self.detach()
        self.track = track
        self.layer = layer
        self.out.clear_extensions()
        for uri in FORWARDED_EXTENSIONS:
            source_id = track.spec.extensions.get(uri)
            viewer_id = self.spec.extensions.get(uri)
            if source_id and viewer_id:
                self.out.map_extension(source_id, viewer_id)
        self.out.request_rebase(True)
        _fastpath.set_source(self.out, layer.stream)
        layer.stream.add(self.out)
        self._source_stream = layer.stream
        self.switches += 1

    # -- simulcast layer switches (decided in sfu/core/simulcast.py) ------------------------------

    def begin_switch(self, layer: Layer, hint32: int | None) -> None:
        """Keep the current layer flowing until `layer`'s next keyframe, then switch there."""
        if self.pending_layer is not None and self.pending_layer is not layer:
            self.pending_layer.stream.remove(self.out)
        self.pending_layer = layer
        layer.stream.add(self.out)
        _fastpath.switch_source(self.out, layer.stream, hint32)

    def poll_switch(self) -> bool:
        """True once the fast path has switched to the pending layer (at its keyframe)."""
        layer = self.pending_layer
        if layer is None or not _fastpath.is_current_source(self.out, layer.stream):
            return False
        if self._source_stream is not None and self._source_stream is not layer.stream:
            self._source_stream.remove(self.out)
        self.pending_layer = None
        self.layer = layer
        self._source_stream = layer.stream
        self.switches += 1
        return True

    def cancel_switch(self) -> None:
        if self.pending_layer is not None:
            _fastpath.cancel_switch(self.out)
            if self.pending_layer.stream is not self._source_stream:
                self.pending_layer.stream.remove(self.out)
            self.pending_layer = None

    def detach(self) -> None:
        self.cancel_switch()
        _fastpath.set_source(self.out, None)
        stream = getattr(self, "_source_stream", None)
        if stream is not None:
            stream.remove(self.out)
        self._source_stream = None
        self.layer = None
        self.track = None

    @property
    def attached(self) -> bool:
        return self.layer is not None and self.layer.stream is self._source_stream

    def stats(self) -> dict[str, object]:
        return {
            "mid": self.spec.mid,
            "kind": self.kind,
            "ssrc": self.spec.ssrc,
            "payload_type": self.spec.payload_type,
            "layer": self.layer.rid if self.layer else None,
            "packets": self.out.packets,
            "bytes": self.out.bytes,
            "keyframes_forwarded": self.out.keyframes_forwarded,
            "switches": self.switches,
            "drops": self.out.drops,
        }
