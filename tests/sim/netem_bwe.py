"""A seeded bottleneck link and a one-viewer sender, on a fake clock, for the bandwidth estimator
and layer allocator (`sfu.core.bwe`, `sfu.core.allocator`). No sockets, no sleeps.

`Link`: FIFO bottleneck (rate, queue limit in seconds), propagation delay, jitter, random loss.
`ViewerSim`: what the server sends one viewer (the current simulcast layer as 30 fps frames, Opus
audio every 20 ms, padding probes after frames when asked), the viewer's transport-cc feedback
every 100 ms back over the propagation delay, and the `ViewerRateControl` ticking every 50 ms
(with `event_driven`, a tick decides only when `ViewerRateControl.settled` says a decision could
change something, as `SimulcastControl` does). A switch takes effect at the target layer's next
keyframe (one round trip plus a frame).

`feedback`: "records" feeds the estimator per-packet records (`on_feedback`, summarised by the
pure-Python `SummaryBuilder`); "fastpath" logs every send in a real `Endpoint`'s send log, encodes
the feedback on the wire and hands the compound to `_fastpath.FeedbackAggregator`, as the server
does; "reference" decodes the same wire bytes in Python (`FeedbackMatcher` + `SummaryBuilder`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sfu import _fastpath
from sfu.core.allocator import LayerOption, ViewerRateControl
from sfu.core.bwe import PacketResult
from sfu.core.twcc import FeedbackMatcher, SummaryBuilder
from sfu.wire import rtcp

STEP_S = 0.001
FPS = 30
MTU_PAYLOAD = 1200
AUDIO_BYTES = 100
PADDING_BYTES = 275
FEEDBACK_INTERVAL_S = 0.1
TICK_S = 0.05


class Link:
    """One direction of a bottleneck: `send(t, size)` -> arrival time, or None when dropped."""

    def __init__(self, rate_bps: float, delay_s: float = 0.02, queue_s: float = 0.3, loss: float = 0.0,
                 jitter_s: float = 0.0, seed: int = 1) -> None:
        self.rate_bps = rate_bps
        self.delay_s = delay_s
        self.queue_s = queue_s
        self.loss = loss
        self.jitter_s = jitter_s
        self.rng = random.Random(seed)
        self.free_at = 0.0
        self.last_arrival = 0.0
        self.dropped = 0

    def send(self, t: float, size: int) -> float | None:
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return None
        depart = max(t, self.free_at) + size * 8 / self.rate_bps
        if depart - t > self.queue_s:
            self.dropped += 1
            return None
        self.free_at = depart
        arrival = depart + self.delay_s + (self.rng.uniform(0, self.jitter_s) if self.jitter_s else 0.0)
        arrival = max(arrival, self.last_arrival)  # FIFO: no reordering
        self.last_arrival = arrival
        return arrival


@dataclass
class SimLayer:
    rid: str
    bitrate_bps: float
    height: int


@dataclass
class ViewerSim:
    layers: list[SimLayer]
    link: Link
    feedback: str = "records"  # or "fastpath" / "reference" (module docstring)
    event_driven: bool = False
    control: ViewerRateControl = field(init=False)
    current: int = 0  # index into layers (ranked low to high)
    pending: int | None = None
    pending_at: float = 0.0
    now: float = 0.0
    seq: int = 0
    sent: dict[int, tuple[float, int, bool]] = field(default_factory=dict)
    arrivals: list[tuple[int, float | None]] = field(default_factory=list)
    in_flight_feedback: list[tuple[float, object]] = field(default_factory=list)
    padding_budget: int = 0
    switches: list[tuple[float, str]] = field(default_factory=list)
    targets: list[tuple[float, str | None]] = field(default_factory=list)
    estimates: list[tuple[float, float]] = field(default_factory=list)
    summaries: list[object] = field(default_factory=list)
    sent_bytes: int = 0
    audio_bytes: int = 0
    decisions: int = 0

    def __post_init__(self) -> None:
        self.control = ViewerRateControl(0.0)
        self.current = len(self.layers) - 1
        self._next_frame = 0.0
        self._next_audio = 0.0
        self._next_feedback = FEEDBACK_INTERVAL_S
        self._next_tick = 0.0
        self._rate_marks: list[tuple[float, int, int]] = [(0.0, 0, 0)]
        self.endpoint = _fastpath.Endpoint()
        self.endpoint.twcc_next = 65_000  # the 16-bit numbers wrap early in the run
        self.aggregator = _fastpath.FeedbackAggregator(self.endpoint)
        self.matcher = FeedbackMatcher(self.endpoint)
        self.builder = SummaryBuilder()
        self.fb_count = 0

    def options(self) -> list[LayerOption]:
        return [LayerOption(i, layer.rid, layer.bitrate_bps, layer.height * 16 // 9, layer.height)
                for i, layer in enumerate(self.layers)]

    def _send(self, size: int, padding: bool = False) -> None:
        if self.feedback == "records":
            self.seq += 1
        else:
            flags = _fastpath.SEND_FLAG_PADDING if padding else 0
            self.seq = _fastpath.record_sent(self.endpoint, self.now, size, flags)
        self.sent[self.seq] = (self.now, size, padding)
        self.sent_bytes += size
        self.arrivals.append((self.seq, self.link.send(self.now, size)))

    def _frame(self) -> None:
        layer = self.layers[self.current]
        remaining = int(layer.bitrate_bps / 8 / FPS)
        while remaining > 0:
            chunk = min(MTU_PAYLOAD, remaining)
            self._send(chunk + 40)
            remaining -= chunk
        while self.padding_budget > 0:
            self._send(PADDING_BYTES, True)
            self.padding_budget -= PADDING_BYTES
        if self.pending is not None and self.now >= self.pending_at:  # the target's keyframe
            self.current, self.pending = self.pending, None
            self.switches.append((self.now, self.layers[self.current].rid))

    def _feedback(self) -> None:
        """The viewer reports what arrived by now (and the losses before it), like a browser."""
        ready = [(s, a) for s, a in self.arrivals if a is None or a <= self.now]
        if not ready:
            return
        last_seq = max(s for s, a in ready if a is not None) if any(a is not None for _, a in ready) else 0
        reported = [(s, a) for s, a in ready if s <= last_seq]
        keep = {s for s, _ in reported}
        self.arrivals = [(s, a) for s, a in self.arrivals if s not in keep]
        if self.feedback != "records":
            arrivals = [(s, None if a is None else int(a * 1e6)) for s, a in sorted(reported)]
            for s, _ in arrivals:
                del self.sent[s]
            packets = rtcp.build_transport_cc(1, 2, arrivals, self.fb_count)
            self.fb_count += len(packets)
            compound = rtcp.serialize([rtcp.ReceiverReport(1, []), *packets])
            self.in_flight_feedback.append((self.now + self.link.delay_s, compound))
            return
        results = []
        for s, a in sorted(reported):
            t, size, padding = self.sent.pop(s)
            results.append(PacketResult(t, a, size, padding))
        self.in_flight_feedback.append((self.now + self.link.delay_s, results))

    def _deliver(self, feedback: object) -> None:
        if self.feedback == "records":
            self.control.on_feedback(feedback, self.now)  # type: ignore[arg-type]
            return
        assert isinstance(feedback, bytes)
        window = self.control.bwe.probe_window()
        if self.feedback == "fastpath":
            summary, rest = self.aggregator.feed(feedback, *window)
            assert rest is not None and summary is not None
            self.summaries.append(summary)
        else:
            results = [r for p in rtcp.parse_compound(feedback) if isinstance(p, rtcp.TransportCc)
                       for r in self.matcher.match(p)]
            summary = self.builder.summarize(results, *window)
            self.summaries.append(summary)
        if summary.matched:
            self.control.on_feedback_summary(summary, self.now)

    def _tick(self) -> None:
        t0, b0, a0 = self._rate_marks[0]
        span = max(self.now - t0, 1e-3)
        sent_bps = (self.sent_bytes - b0) * 8 / span
        audio_bps = (self.audio_bytes - a0) * 8 / span
        self._rate_marks.append((self.now, self.sent_bytes, self.audio_bytes))
        while len(self._rate_marks) > 10:
            self._rate_marks.pop(0)
        options = self.options()
        if self.event_driven and self.control.settled(self.now, {o.key: o.need_bps for o in options}):
            self.targets.append((self.now, self.targets[-1][1]))
            self.estimates.append((self.now, self.control.bwe.estimate_bps))
            return
        self.decisions += 1
        decision = self.control.decide(self.now, options, audio_bps, sent_bps)
        if decision.stop_padding:
            self.padding_budget = 0
        self.padding_budget += decision.padding_bytes
        want = decision.target
        self.targets.append((self.now, self.layers[want].rid if want is not None else None))
        if want is not None and want != (self.pending if self.pending is not None else self.current):
            if want == self.current:
                self.pending = None
            else:
                self.pending = want
                self.pending_at = self.now + 2 * self.link.delay_s + 1 / FPS  # PLI -> keyframe
        self.estimates.append((self.now, self.control.bwe.estimate_bps))

    def run(self, until: float) -> None:
        while self.now < until:
            self.now = round(self.now + STEP_S, 6)
            if self.now >= self._next_audio:
                self._next_audio += 0.02
                self.audio_bytes += AUDIO_BYTES
                self._send(AUDIO_BYTES)
            if self.now >= self._next_frame:
                self._next_frame += 1 / FPS
                self._frame()
            if self.now >= self._next_feedback:
                self._next_feedback += FEEDBACK_INTERVAL_S
                self._feedback()
            while self.in_flight_feedback and self.in_flight_feedback[0][0] <= self.now:
                _, feedback = self.in_flight_feedback.pop(0)
                self._deliver(feedback)
            if self.now >= self._next_tick:
                self._next_tick += TICK_S
                self._tick()

    def layer_at(self, t: float) -> str:
        rid = self.layers[-1].rid
        for at, r in self.switches:
            if at <= t:
                rid = r
        return rid

    def switches_between(self, start: float, end: float) -> int:
        return sum(1 for at, _ in self.switches if start <= at < end)


BROWSER_LAYERS = [SimLayer("q", 150_000, 180), SimLayer("h", 500_000, 360), SimLayer("f", 1_500_000, 720)]
