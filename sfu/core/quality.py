"""The figures operators watch, measured on the server: join times, loss, RTT, jitter, freezes.

Driven by the `SessionManager` that owns it, with its `now` (no clock here):

- `viewer_created(session, now)` when a WHEP session is created (its POST is being answered);
  `poll(now)` from every timer sweep while some viewer has not had its first media packet and first
  video keyframe sent (`next_deadline()` asks for a sweep every `JOIN_POLL_S` meanwhile). Outputs the
  `join_s` (POST to first media packet sent) and `first_keyframe_s` (POST to first video keyframe
  sent) histograms.
- `report_tick(now)` once a report interval (1 s): loss and RTT on both legs into the `loss` /
  `rtt_s` histograms (labelled by leg only), per-viewer freezes the server can infer (a live stream's
  video sent to the viewer stopped for a whole interval, counted once per stall), per-layer loss.

Reads the fast path's counters (`OutTrack.packets`, `keyframes_forwarded`, `InStream.expected`) and
the viewers' receiver reports (`Subscription.last_report`, RFC 3550 §6.4.1); the RTTs come from the
repair component (XR DLRR towards publishers, RFC 3611 §4.5; LSR/DLSR from viewers, RFC 3550 §6.4.1).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

JOIN_POLL_S = 0.02  # join / first-keyframe timing resolution while a viewer is joining
JOIN_GIVE_UP_S = 30.0  # a viewer with no media by then is not waited for any more (not observed)
# Bucket upper bounds (Prometheus `le`), seconds or fractions
JOIN_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
RTT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
LOSS_BUCKETS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
LEGS = ("publisher", "viewer")


class Histogram:
    """Cumulative-free counts per bucket (the last is +Inf), a sum and a count."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, count of values <= le)] ending with +Inf, as Prometheus writes buckets."""
        out, total = [], 0
        for bound, n in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


@dataclass
class _Viewer:
    created_at: float
    joined_s: float | None = None
    keyframe_s: float | None = None
    last_packets: int = -1
    stalled: bool = False
    freezes: int = 0
    last_report: object = None
    loss: float | None = None
    jitter_ms: float | None = None


@dataclass
class _LayerPrior:
    expected: int
    packets: int
    loss: float | None = None


@dataclass
class Quality:
    """See the module docstring. `manager` is the owning SessionManager."""

    manager: object
    join_s: Histogram = field(default_factory=lambda: Histogram(JOIN_BUCKETS_S))
    first_keyframe_s: Histogram = field(default_factory=lambda: Histogram(JOIN_BUCKETS_S))
    rtt_s: dict[str, Histogram] = field(default_factory=lambda: {leg: Histogram(RTT_BUCKETS_S) for leg in LEGS})
    loss: dict[str, Histogram] = field(default_factory=lambda: {leg: Histogram(LOSS_BUCKETS) for leg in LEGS})
    freezes: int = 0
    _viewers: dict[str, _Viewer] = field(default_factory=dict)
    _joining: set[str] = field(default_factory=set)
    _layers: dict[int, _LayerPrior] = field(default_factory=dict)
    _polled_at: float = 0.0

    # -- joins ------------------------------------------------------------------------------------

    def viewer_created(self, session, now: float) -> None:
        self._viewers[session.id] = _Viewer(now)
        self._joining.add(session.id)
        self._polled_at = now

    def next_deadline(self) -> float | None:
        return self._polled_at + JOIN_POLL_S if self._joining else None

    def poll(self, now: float) -> None:
        self._polled_at = now
        if not self._joining:
            return
        sessions = self.manager.sessions
        for sid in list(self._joining):
            session, v = sessions.get(sid), self._viewers.get(sid)
            if session is None or v is None or now - v.created_at > JOIN_GIVE_UP_S:
                self._joining.discard(sid)
                continue
            video = [s for s in session.subscriptions if s.kind == "video"]
            if v.joined_s is None and any(s.out.packets > 0 for s in session.subscriptions):
                v.joined_s = now - v.created_at
                self.join_s.observe(v.joined_s)
            if v.keyframe_s is None and any(s.out.keyframes_forwarded > 0 for s in video):
                v.keyframe_s = now - v.created_at
                self.first_keyframe_s.observe(v.keyframe_s)
            if v.joined_s is not None and (v.keyframe_s is not None or not video):
                self._joining.discard(sid)

    def forget(self, session) -> None:
        self._viewers.pop(session.id, None)
        self._joining.discard(session.id)

    # -- once a report interval ---------------------------------------------------------------------

    def report_tick(self, now: float) -> None:
        manager = self.manager
        repair = manager.repair
        live_layers: set[int] = set()
        for st in manager.streams.values():
            for track in st.tracks:
                for layer in track.layers:
                    key = id(layer.stream)
                    live_layers.add(key)
                    prior = self._layers.get(key)
                    expected, packets = layer.stream.expected, layer.stream.packets
                    if prior is None:
                        self._layers[key] = _LayerPrior(expected, packets)
                        continue
                    exp_d, got_d = expected - prior.expected, packets - prior.packets
                    prior.expected, prior.packets = expected, packets
                    if exp_d > 0:  # RFC 3550 A.3: fraction lost over the interval
                        prior.loss = max(0, exp_d - got_d) / exp_d
                        self.loss["publisher"].observe(prior.loss)
                    rtt_ms = repair.layer_stats(layer).get("rtt_ms")
                    if rtt_ms is not None and exp_d > 0:
                        self.rtt_s["publisher"].observe(rtt_ms / 1000)
        for key in [k for k in self._layers if k not in live_layers]:
            del self._layers[key]
        for sid, v in self._viewers.items():
            session = manager.sessions.get(sid)
            if session is None:
                continue
            for sub in session.subscriptions:
                if sub.kind != "video":
                    continue
                report = getattr(sub, "last_report", None)
                if report is not None and report is not v.last_report:
                    v.last_report = report
                    v.loss = report.fraction_lost / 256
                    v.jitter_ms = report.jitter / max(1, sub.out.clock_rate) * 1000
                    self.loss["viewer"].observe(v.loss)
                    rtt = (repair.subscription_stats(sub) or {}).get("rtt_ms")
                    if rtt is not None:
                        self.rtt_s["viewer"].observe(rtt / 1000)
                # a freeze: the stream is live, the viewer gets a layer, and no video went out all interval
                packets = sub.out.packets
                flowing = session.stream.live and sub.layer is not None and v.joined_s is not None
                if flowing and packets == v.last_packets:
                    if not v.stalled:
                        v.stalled = True
                        v.freezes += 1
                        self.freezes += 1
                elif packets != v.last_packets:
                    v.stalled = False
                v.last_packets = packets

    # -- read-outs ------------------------------------------------------------------------------

    def layer_loss(self, layer) -> float | None:
        prior = self._layers.get(id(layer.stream))
        return None if prior is None or prior.loss is None else round(prior.loss, 4)

    def viewer_stats(self, session) -> dict[str, object] | None:
        v = self._viewers.get(session.id)
        if v is None:
            return None
        return {
            "join_ms": None if v.joined_s is None else round(v.joined_s * 1000, 1),
            "first_keyframe_ms": None if v.keyframe_s is None else round(v.keyframe_s * 1000, 1),
            "loss": None if v.loss is None else round(v.loss, 4),  # fraction lost, its last receiver report
            "jitter_ms": None if v.jitter_ms is None else round(v.jitter_ms, 2),
            "freezes": v.freezes,
            "frozen": v.stalled,
        }
