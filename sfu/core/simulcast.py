"""Simulcast in, one adaptive stream out per viewer: the session manager's layer control.

Drives, for the `SessionManager` that owns it:
- towards every publisher: transport-wide congestion control feedback built from the fast path's
  arrival records (every `twcc.FEEDBACK_INTERVAL_S`), or REMB when only that was negotiated, so
  browsers ramp up and send all their layers;
- per incoming layer: a `LayerMeter` (bitrate, picture size, still arriving?);
- per viewer: a `ViewerRateControl` (send-side estimate from the viewer's transport-cc feedback,
  or, for a viewer that negotiated only REMB, an estimate from its REMB and receiver-report loss;
  layer allocation with the viewer's manual limit), whose decisions become clean switches: the
  current layer keeps flowing until the target's keyframe (requested, throttled), timestamps are
  aligned through the publisher's sender reports.

Inputs: `add_publisher` / `add_viewer` / `remove`, `on_viewer_rtcp(session, compound, now)` (the
transport-cc feedback in a viewer's RTCP, summarised in C), `on_viewer_remb` / `on_viewer_report`
(REMB-only viewers), `set_limit(...)` (the HTTP layer call),
`choose_layer(...)` (a subscription being attached), `tick(now)` every `TICK_S`. Outputs go through
the manager (`_send_rtcp`, `_want_keyframe`); `stats_for(session)` and `metrics()` report.

Per-viewer work is event-driven, not a poll of every viewer: a tick decides for the viewers that
are busy (a switch pending, a candidate confirming, a probe, not yet connected), those whose
feedback moved the estimate out of their steady band (`ViewerRateControl.settled`), those whose
hold-off or probe time has come (one heap), and those watching a track whose ranked layers changed
(a new shape: every viewer of the stream; new bitrates only: each settled viewer re-checks its
band); plus `SWEEP_PER_TICK` viewers in turn, a bounded safety net. A steady viewer costs one
band check per feedback and nothing per tick.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import _fastpath
from ..errors import BadRequest
from ..wire import rtcp
from .allocator import LayerOption, ManualLimit, ViewerRateControl
from .layers import LayerMeter, rank, timestamp_hint
from .overload import OverloadGuard
from .remb import RembEstimate
from .stream import Layer, Track
from .twcc import FEEDBACK_INTERVAL_S, FeedbackSender

log = logging.getLogger("sfu.simulcast")

REMB_INTERVAL_S = 1.0
PUBLISHER_REMB_BPS = 8_000_000  # what a REMB-only publisher may send us (we never decode: no limit of ours)
SWITCH_TIMEOUT_S = 6.0  # a target layer that sent no keyframe this long (OBS ignores PLI) is given up
RATE_WINDOW_S = 0.5
SWEEP_PER_TICK = 4  # viewers decided each tick in turn whatever their state (a safety net, bounded)


@dataclass
class _Rate:
    """Bytes per second of a growing counter, over `RATE_WINDOW_S` windows."""

    bps: float = 0.0
    last: int = 0
    at: float | None = None

    def sample(self, total: int, now: float) -> float:
        if self.at is None:
            self.at, self.last = now, total
        elif now - self.at >= RATE_WINDOW_S:
            self.bps = (total - self.last) * 8 / (now - self.at)
            self.at, self.last = now, total
        return self.bps


@dataclass
class _Publisher:
    session: object
    twcc: FeedbackSender | None
    remb: bool
    next_remb: float = 0.0


@dataclass
class _Viewer:
    session: object
    control: ViewerRateControl
    aggregator: _fastpath.FeedbackAggregator
    sent: _Rate = field(default_factory=_Rate)
    audio: _Rate = field(default_factory=_Rate)
    switch_started: float | None = None
    target_rid: str | None = None
    track_id: int = 0  # id(track) of the last decision, to find its `_TrackOptions`
    version: int = -1  # that track's options version at the last decision
    wake_at: float | None = None  # the settled decision's `until` already in the wake heap


@dataclass
class _TrackOptions:
    """One track's ranked layers as of the last tick, shared by all its viewers."""

    track: Track
    ranked: list[LayerOption]
    shape: tuple  # what the allowed layers depend on: keys, rids, sizes, availability, order
    needs: dict[object, float]  # need_bps by key (the band every settled viewer checks)
    version: int  # changes with the shape


def parse_limit(options: Mapping[str, object]) -> ManualLimit:
    """The viewer's manual limit from WHEP query parameters or a JSON body:
    `layer=<rid>`, `max_height=<px>`, `video=off` / `paused=true`. Raises BadRequest."""
    limit = ManualLimit()
    layer = options.get("layer")
    if layer is not None and layer != "":
        limit.layer = str(layer)
    height = options.get("max_height")
    if height is not None and height != "":
        try:
            limit.max_height = int(height)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise BadRequest("max_height must be an integer number of pixels") from None
        if limit.max_height <= 0:
            raise BadRequest("max_height must be positive")
    video = options.get("video")
    paused = options.get("paused")
    if video is not None and str(video).lower() in ("off", "0", "false", "no"):
        limit.paused = True
    if paused is not None:
        limit.paused = paused is True or str(paused).lower() in ("1", "true", "yes", "on")
    return limit


class SimulcastControl:
    """Layer measurement, publisher feedback and per-viewer adaptive layer choice."""

    def __init__(self, manager) -> None:
        self.manager = manager
        self.publishers: dict[str, _Publisher] = {}
        self.viewers: dict[str, _Viewer] = {}
        self.meters: dict[int, LayerMeter] = {}  # id(InStream) -> meter
        self.next_feedback = 0.0
        self.switches = 0
        self._tracks: dict[int, _TrackOptions] = {}  # id(track) -> ranked layers, refreshed every tick
        self._versions = itertools.count()
        self._busy: dict[str, _Viewer] = {}  # decide at the next tick (insertion order)
        self._wake: list[tuple[float, int, str]] = []  # (until, seq, session id): hold-off ends, probe times
        self._wake_seq = itertools.count()
        self._sweep: list[str] = []  # the round-robin order, rebuilt when it runs out
        self.decisions = 0
        # the server's own capacity: a ceiling on every viewer's video while media waits too long
        self.overload = OverloadGuard(manager.config.overload_queue_delay_ms / 1000)

    @property
    def active(self) -> bool:
        return bool(self.publishers or self.viewers)

    # -- sessions --------------------------------------------------------------------------------

    def add_publisher(self, session, twcc_ext: int | None, remb: bool) -> None:
        self.publishers[session.id] = _Publisher(session, FeedbackSender(session.rtcp_ssrc) if twcc_ext else None, remb)

    def add_viewer(self, session, options: Mapping[str, object], now: float) -> None:
        video = [sub.spec for sub in session.subscriptions if sub.kind == "video"]
        # REMB but no transport-wide feedback (older libwebrtc players, some embedded stacks):
        # the estimate comes from its REMB and receiver-report loss (sfu/core/remb.py)
        remb_only = bool(video) and any(s.remb for s in video) and not any(s.transport_cc for s in video)
        control = ViewerRateControl(now, remb_only=remb_only)
        control.allocator.limit = parse_limit(options)
        control.ceiling_bps = self.overload.limit_bps
        viewer = self.viewers[session.id] = _Viewer(session, control, _fastpath.FeedbackAggregator(session.peer.endpoint))
        self._busy[session.id] = viewer
        self._apply_pause(session, control.limit, now)

    def remove(self, session) -> None:
        self.publishers.pop(session.id, None)
        self.viewers.pop(session.id, None)
        self._busy.pop(session.id, None)  # wake-heap and sweep entries are skipped when they come up

    def set_limit(self, session, options: Mapping[str, object], now: float) -> dict[str, object]:
        """Change a running viewer's manual limit (keys missing from `options` are cleared)."""
        viewer = self.viewers[session.id]
        limit = parse_limit(options)
        viewer.control.allocator.limit = limit
        viewer.control.allocator.hold_until = 0.0  # a manual change is not a congestion event
        self._apply_pause(session, limit, now)
        self._settle(viewer, self._decide(viewer, now, force=True))
        return self.stats_for(session)

    def _apply_pause(self, session, limit: ManualLimit, now: float) -> None:
        for sub in session.subscriptions:
            if sub.kind != "video":
                continue
            if limit.paused and not sub.out.paused:
                sub.out.paused = True
            elif not limit.paused and sub.out.paused:
                sub.out.paused = False
                sub.out.request_rebase(True)
                if sub.layer is not None:
                    self.manager._want_keyframe(session.stream, sub.layer, now)

    # -- layer choice ----------------------------------------------------------------------------

    def meter(self, track: Track, layer: Layer) -> LayerMeter:
        meter = self.meters.get(id(layer.stream))
        if meter is None or meter.stream is not layer.stream:
            meter = self.meters[id(layer.stream)] = LayerMeter(layer.stream, track.spec.codec.name)
        return meter

    def options(self, track: Track, now: float) -> list[LayerOption]:
        """The track's layers ranked low to high (by picture size, else bitrate)."""
        meters = {id(m): (layer, m) for layer in track.layers for m in [self.meter(track, layer)]}
        ordered = rank([m for _, m in meters.values()])
        result = []
        for m in ordered:
            layer = meters[id(m)][0]
            result.append(LayerOption(id(layer), layer.rid, m.bitrate_bps, m.width, m.height, m.available(now)))
        return result

    def choose_layer(self, track: Track, sub, session) -> Layer | None:
        """The layer a subscription starts on (or keeps, when still attached)."""
        if sub.layer is not None and sub.layer in track.layers and sub.attached:
            return sub.layer
        if not track.layers:
            return None
        if track.kind != "video" or len(track.layers) == 1:
            return track.layers[0] if len(track.layers) == 1 else track.best_layer()
        now = self.manager.clock()
        viewer = self.viewers.get(session.id)
        if viewer is not None:
            self._busy[session.id] = viewer  # decide again once attached
        for layer in track.layers:  # sizes from keyframes seen since the last tick count already
            self.meter(track, layer).sample(now)
        ranked = self.options(track, now)
        if viewer is None:
            return track.best_layer()
        # a fresh pick (first attach or publisher change): forget the previous layer's identity
        viewer.control.allocator.current = None
        budget = viewer.control.bwe.estimate_bps - viewer.audio.bps
        key, _reason, _probe = viewer.control.allocator.decide(now, ranked, budget)
        viewer.control.allocator.current = key
        return next((layer for layer in track.layers if id(layer) == key), None) or track.best_layer()

    # -- inputs ----------------------------------------------------------------------------------

    def on_viewer_rtcp(self, session, data: bytes, now: float) -> bytes | None:
        """Take the transport-cc feedback out of a viewer's RTCP compound (parsed, matched and
        summarised in C: no object per packet) and feed the viewer's estimate; return the other
        packets for the Python parser (None: nothing else), or the compound untouched when its
        headers do not walk (the parser counts it malformed)."""
        viewer = self.viewers.get(session.id)
        if viewer is None:
            return data
        summary, rest = viewer.aggregator.feed(data, *viewer.control.bwe.probe_window())
        if summary is not None:
            session.rtcp_in["TransportCc"] += summary.feedbacks
            if summary.malformed:
                self.manager.counters["rtcp-malformed"] += summary.malformed
                session.rtcp_in["malformed-twcc"] += summary.malformed
            if summary.matched:
                viewer.control.on_feedback_summary(summary, now)
                if session.id not in self._busy and not self._still_settled(viewer, self._tracks.get(viewer.track_id), now):
                    self._busy[session.id] = viewer
        return rest

    def on_viewer_remb(self, session, bitrate_bps: int, now: float) -> None:
        """A viewer's REMB (draft-alvestrand-rmcat-remb-03): its estimate when it has no transport-cc."""
        viewer = self.viewers.get(session.id)
        if viewer is not None and isinstance(viewer.control.bwe, RembEstimate):
            viewer.control.on_remb(bitrate_bps, now)
            self._woken(viewer, now)

    def on_viewer_report(self, session, sub, block: rtcp.ReportBlock, now: float) -> None:
        """A viewer's receiver-report block: its video's fraction lost bounds a REMB-only estimate."""
        viewer = self.viewers.get(session.id)
        if viewer is not None and sub.kind == "video" and isinstance(viewer.control.bwe, RembEstimate):
            viewer.control.on_receiver_loss(block.fraction_lost / 256, now)
            self._woken(viewer, now)

    def _woken(self, viewer: _Viewer, now: float) -> None:
        """The estimate moved: a resting viewer decides again when it left its band."""
        session_id = viewer.session.id
        if session_id not in self._busy and not self._still_settled(viewer, self._tracks.get(viewer.track_id), now):
            self._busy[session_id] = viewer

    def tick(self, now: float) -> None:
        media_poll = self.manager.media_poll  # forward waiting media between units (sfu.io.udp)
        if now >= self.next_feedback:
            self.next_feedback = now + FEEDBACK_INTERVAL_S
            self._publisher_feedback(now)
        router = self.manager.router
        if self.overload.update(now, router.take_queue_delay(), int(router.bytes_out), len(self.viewers)):
            ceiling = self.overload.limit_bps
            log.info("overload: video ceiling %s per viewer (media waited %.0f ms in the socket)",
                     "lifted" if self.overload.ceiling_bps is None else f"{ceiling / 1e3:.0f} kbit/s",
                     self.overload.last_delay_s * 1e3)
            for viewer in self.viewers.values():  # everyone decides against the new ceiling
                viewer.control.ceiling_bps = ceiling
                self._busy[viewer.session.id] = viewer
        live = set()
        for st in self.manager.streams.values():
            for track in st.tracks:
                for layer in track.layers:
                    self.meter(track, layer).sample(now)
                    live.add(id(layer.stream))
            media_poll()
        for key in [k for k in self.meters if k not in live]:
            del self.meters[key]
        self._refresh_options(now)
        while self._wake and self._wake[0][0] <= now:
            until, _, session_id = heapq.heappop(self._wake)
            viewer = self.viewers.get(session_id)
            if viewer is not None and viewer.wake_at == until:
                viewer.wake_at = None
                self._busy[session_id] = viewer
        for _ in range(min(SWEEP_PER_TICK, len(self.viewers))):
            if not self._sweep:
                self._sweep = list(self.viewers)
            viewer = self.viewers.get(self._sweep.pop())
            if viewer is not None:
                self._busy[viewer.session.id] = viewer
        for viewer in list(self._busy.values()):
            self._settle(viewer, self._decide(viewer, now))
            media_poll()

    def _refresh_options(self, now: float) -> None:
        """Rank every video track's layers once per tick (the meters were just sampled); wake the
        viewers a change concerns."""
        seen = {}
        for st in self.manager.streams.values():
            for track in st.tracks:
                if track.kind != "video" or not track.layers:
                    continue
                ranked = self.options(track, now)
                shape = tuple((o.key, o.rid, o.width, o.height, o.available) for o in ranked)
                needs = {o.key: o.need_bps for o in ranked}
                old = self._tracks.get(id(track))
                if old is not None and old.track is track and old.shape == shape:
                    seen[id(track)] = old
                    if old.needs != needs:
                        old.ranked, old.needs = ranked, needs
                        self._recheck(st, id(track), old, now)
                    else:
                        old.ranked = ranked
                    continue
                seen[id(track)] = _TrackOptions(track, ranked, shape, needs, next(self._versions))
                for session in st.viewers:  # new layers, order or availability: everyone decides
                    viewer = self.viewers.get(session.id)
                    if viewer is not None:
                        self._busy[session.id] = viewer
            self.manager.media_poll()
        self._tracks = seen

    def _recheck(self, st, track_id: int, options: _TrackOptions, now: float) -> None:
        """New bitrates, same layers: settled viewers of the track check their band again."""
        busy = self._busy
        media_poll = self.manager.media_poll
        for session in st.viewers:
            viewer = self.viewers.get(session.id)
            if viewer is None or session.id in busy or viewer.track_id != track_id:
                continue
            if not self._still_settled(viewer, options, now):
                busy[session.id] = viewer
            media_poll()

    @staticmethod
    def _still_settled(viewer: _Viewer, options: _TrackOptions | None, now: float) -> bool:
        """Whether a resting viewer's last decision still stands against its track's ranking."""
        return (options is not None and options.version == viewer.version
                and viewer.control.settled(now, options.needs))

    def _settle(self, viewer: _Viewer, rest: bool) -> None:
        """After a decision: keep the viewer busy, or let it rest until an event (see the module
        docstring); a settled decision's `until` goes into the wake heap."""
        session_id = viewer.session.id
        if not rest:
            self._busy[session_id] = viewer
            return
        self._busy.pop(session_id, None)
        quiet = viewer.control.quiet
        if quiet is not None and quiet.until != float("inf") and quiet.until != viewer.wake_at:
            viewer.wake_at = quiet.until
            heapq.heappush(self._wake, (quiet.until, next(self._wake_seq), session_id))

    # -- publishers ------------------------------------------------------------------------------

    def _publisher_feedback(self, now: float) -> None:
        for pub in self.publishers.values():
            session = pub.session
            if session.closed or session.peer.srtp_profile is None:
                continue
            endpoint = session.peer.endpoint
            media_ssrc = next((layer.ssrc for t in session.stream.tracks for layer in t.layers), 0)
            if pub.twcc is not None:
                pub.twcc.add(endpoint.take_twcc())
                packets = pub.twcc.build(media_ssrc)
                for i in range(0, len(packets), 4):
                    self.manager._send_rtcp(session, packets[i : i + 4])
                if packets:
                    self.manager.counters["twcc-feedback-sent"] += len(packets)
                self.manager.media_poll()
            elif pub.remb and now >= pub.next_remb and media_ssrc:
                pub.next_remb = now + REMB_INTERVAL_S
                ssrcs = [layer.ssrc for t in session.stream.tracks if t.kind == "video" for layer in t.layers]
                self.manager._send_rtcp(session, [
                    rtcp.ReceiverReport(session.rtcp_ssrc, []),
                    rtcp.Remb(session.rtcp_ssrc, PUBLISHER_REMB_BPS, ssrcs),
                ])
                self.manager.counters["remb-sent"] += 1

    # -- viewers ---------------------------------------------------------------------------------

    def _video(self, session):
        st = session.stream
        for sub in session.subscriptions:
            if sub.kind == "video" and sub.source_index < len(st.tracks):
                track = st.tracks[sub.source_index]
                if track.kind == "video":
                    return sub, track
        return None, None

    def _decide(self, viewer: _Viewer, now: float, force: bool = False) -> bool:
        """One decision for one viewer; True when it may rest until an event (see the module
        docstring), False to decide again at the next tick. `force`: rank the layers afresh (a call
        between ticks)."""
        self.decisions += 1
        session = viewer.session
        if session.closed:
            return True
        endpoint = session.peer.endpoint
        sent = viewer.sent.sample(int(endpoint.tx_bytes), now)
        audio_bytes = sum(int(s.out.bytes) for s in session.subscriptions if s.kind == "audio")
        audio = viewer.audio.sample(audio_bytes, now) * 1.2  # headers and SRTP tag on top of payload
        sub, track = self._video(session)
        if sub is None or track is None or not track.layers:
            return True  # nothing to decide until a publisher's track is attached (`choose_layer`)
        if sub.pending_layer is not None:
            if sub.poll_switch():
                self.switches += 1
                self.manager.counters["layer-switches"] += 1
                viewer.switch_started = None
            elif viewer.switch_started is not None and now - viewer.switch_started > SWITCH_TIMEOUT_S:
                sub.cancel_switch()
                self.manager.counters["layer-switch-timeouts"] += 1
                viewer.switch_started = None
        if session.peer.connected_at is None:
            return False
        if len(track.layers) < 2 or not sub.attached:
            return sub.pending_layer is None  # a new layer changes the track's shape: woken then
        if viewer.control.limit.paused:
            viewer.target_rid = None
            return sub.pending_layer is None  # `set_limit` decides again
        options = self._tracks.get(id(track))
        if options is not None and options.track is track and not force:
            ranked = options.ranked
            viewer.track_id, viewer.version = id(track), options.version
        else:
            ranked = self.options(track, now)
            viewer.track_id, viewer.version = id(track), -1  # settled only against a tick's ranking
        control = viewer.control
        control.allocator.current = id(sub.pending_layer or sub.layer) if (sub.pending_layer or sub.layer) else None
        decision = control.decide(now, ranked, audio, sent)
        if decision.stop_padding:
            _fastpath.add_padding(sub.out, 0, True)
        if decision.padding_bytes > 0:
            _fastpath.add_padding(sub.out, decision.padding_bytes)
        target = next((layer for layer in track.layers if id(layer) == decision.target), None)
        viewer.target_rid = target.rid if target is not None else None
        if target is not None and target is not (sub.pending_layer or sub.layer):
            self._switch(viewer, sub, track, target, now, decision.reason)
        return sub.pending_layer is None and control.quiet is not None

    def _switch(self, viewer: _Viewer, sub, track: Track, target: Layer, now: float, reason: str) -> None:
        session = viewer.session
        if target is sub.layer:  # back to where we are: drop the pending switch
            sub.cancel_switch()
            viewer.switch_started = None
            return
        current = sub.layer
        hint = timestamp_hint(current.last_sr if current else None, target.last_sr, sub.out.clock_rate, sub.out.ts_offset)
        sub.begin_switch(target, hint)
        viewer.switch_started = now
        self.manager._want_keyframe(session.stream, target, now)
        self.manager.counters[f"layer-switch-{reason}"] += 1
        log.debug("viewer %s: %s -> %s (%s)", session.id, current.rid if current else None, target.rid, reason)

    # -- reporting -------------------------------------------------------------------------------

    def stats_for(self, session) -> dict[str, object] | None:
        viewer = self.viewers.get(session.id)
        if viewer is None:
            return None
        sub, _track = self._video(session)
        state = _fastpath.source_state(sub.out) if sub is not None else {}
        limit = viewer.control.limit
        return {
            "current_layer": sub.layer.rid if sub is not None and sub.layer is not None else None,
            "pending_layer": sub.pending_layer.rid if sub is not None and sub.pending_layer is not None else None,
            "target_layer": viewer.target_rid,
            "switches": state.get("switches", 0),
            "limit": {"layer": limit.layer, "max_height": limit.max_height, "paused": limit.paused},
            "estimate_bps": int(viewer.control.bwe.estimate_bps),
            "sent_bps": int(viewer.sent.sample(int(session.peer.endpoint.tx_bytes), self.manager.clock())),
            "bwe": viewer.control.stats(),
            "fastpath": state,
        }

    def layer_stats(self, track: Track, layer: Layer) -> dict[str, object]:
        meter = self.meters.get(id(layer.stream))
        if meter is None:
            return {}
        return {"bitrate_bps": int(meter.bitrate_bps), "width": meter.width, "height": meter.height,
                "fps": round(meter.fps, 1)}
