"""What anyone may know about the streams: the public summary behind `GET /api/streams`.

A pure read of the session manager's state, driven by the HTTP shell's requests: for each stream,
whether it is live, how many viewers it has, its video layers (rid, size, bitrate) and how many
viewers get each layer. Never a session id or handle, a participant or an address: session URLs are
secret capabilities (`sfu.core.sessions.public_id`), and who watches is nobody's business but the
operator's (`/api/stats`).

`PublicView.summaries(now)` is computed at most once per `CACHE_S`: every open watch page polls it,
and one walk over the streams per second serves them all.
"""

from __future__ import annotations

from collections import Counter

CACHE_S = 1.0  # a watch page polls about once a second; one walk over the streams serves them all


def _stream_summary(manager, st) -> dict[str, object]:
    per_layer: Counter[str] = Counter()
    for viewer in st.viewers:
        for sub in viewer.subscriptions:
            if sub.kind == "video" and sub.layer is not None:
                per_layer[sub.layer.rid or "video"] += 1
    layers = []
    for track in st.tracks:
        if track.kind != "video":
            continue
        for layer in track.layers:
            rid = layer.rid or "video"
            meter = manager.simulcast.layer_stats(track, layer)
            layers.append({
                "rid": rid,
                "simulcast": layer.rid is not None,
                "codec": track.spec.codec.name,
                "width": meter.get("width"),
                "height": meter.get("height"),
                "bitrate_bps": meter.get("bitrate_bps"),
                "fps": meter.get("fps"),
                "viewers": per_layer.get(rid, 0),
            })
    return {
        "name": st.name,
        "live": bool(st.live),
        "viewers": len(st.viewers),
        "audio": any(t.kind == "audio" for t in st.tracks),
        "video": any(t.kind == "video" for t in st.tracks),
        "layers": layers,
    }


class PublicView:
    """The public summary of every stream, cached for `CACHE_S` (see the module docstring)."""

    def __init__(self, manager) -> None:
        self.manager = manager
        self._at: float | None = None
        self._cached: dict[str, dict[str, object]] = {}

    def summaries(self, now: float) -> dict[str, dict[str, object]]:
        if self._at is None or now - self._at >= CACHE_S or now < self._at:
            self._cached = {name: _stream_summary(self.manager, st) for name, st in self.manager.streams.items()}
            self._at = now
        return self._cached

    def stream(self, name: str, now: float) -> dict[str, object]:
        """One stream's summary; a name that is not known is `live: false` with nobody watching."""
        found = self.summaries(now).get(name)
        if found is not None:
            return found
        return {"name": name, "live": False, "viewers": 0, "audio": False, "video": False, "layers": []}

    def live_streams(self, now: float) -> list[dict[str, object]]:
        return sorted((s for s in self.summaries(now).values() if s["live"]), key=lambda s: str(s["name"]))
