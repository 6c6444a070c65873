"""Per-viewer Python control work in isolation: one viewer RTCP feedback and one layer tick.

Builds, without sockets, what `SimulcastControl` sees at the bench's load (one VP8 publisher with
three simulcast layers; viewers on the top layer at ~2.5 Mbit/s, 30 fps, Opus every 20 ms,
transport-cc feedback every 100 ms) and times, on a fake clock:

- `feedback`: `SimulcastControl.on_viewer_rtcp(session, compound, now)` (C parse and summary,
  then the estimator), µs per viewer feedback;
- `tick`: `SimulcastControl.tick(now)` every `TICK_S` with all viewers attached, µs per viewer per
  tick (what the 50 ms poll costs per viewer);
- `memory`: bytes allocated per viewer for its control state after the run (tracemalloc).

Usage: `.venv/bin/python bench/control_micro.py [viewers] [seconds]`.
"""

from __future__ import annotations

import gc
import random
import sys
import time
import tracemalloc
from collections import Counter
from types import SimpleNamespace

from sfu import _fastpath
from sfu.core.negotiation import CodecSpec
from sfu.core.sessions import TICK_S
from sfu.core.simulcast import SimulcastControl
from sfu.core.stream import Layer, Track
from sfu.core.subscription import Subscription
from sfu.testing import media
from sfu.wire import rtcp

FPS = 30
FRAME_BYTES = 2_500_000 // 8 // FPS
MTU = 1150
FEEDBACK_S = 0.1
LAYERS = (("q", 320, 180, 150_000, 0x100), ("h", 640, 360, 500_000, 0x200), ("f", 1280, 720, 1_700_000, 0x300))


class _Session(SimpleNamespace):
    __hash__ = object.__hash__  # sessions are kept in sets, by identity


class _Manager:
    def __init__(self, router: _fastpath.Router) -> None:
        self.now = 0.0
        self.streams: dict[str, object] = {}
        self.counters: Counter[str] = Counter()
        self.router = router  # the overload guard reads its queue delay (none here: no socket)
        self.config = SimpleNamespace(overload_queue_delay_ms=30.0)

    def media_poll(self) -> None:
        pass

    def clock(self) -> float:
        return self.now

    def _want_keyframe(self, stream, layer, now) -> None:
        pass

    def _send_rtcp(self, session, packets) -> None:
        pass


def _track(codec: CodecSpec) -> Track:
    spec = SimpleNamespace(kind="video", codec=codec, extensions={})
    track = Track(1, spec)  # type: ignore[arg-type]
    for rid, _w, _h, _bps, ssrc in LAYERS:
        track.layers.append(Layer(rid, ssrc, _fastpath.InStream(None, ssrc, _fastpath.CODEC_VP8, 96, 90000)))
    return track


def _publish(router: _fastpath.Router, track: Track, frame: int, now: float) -> None:
    """One frame of every layer into the fast path (meters see bytes, sizes, liveness)."""
    for (_rid, width, height, bps, ssrc), layer in zip(LAYERS, track.layers, strict=True):
        payloads = media.vp8_frame_payloads(keyframe=frame % 60 == 0, width=width, height=height,
                                            picture_id=frame & 0x7FFF, frame_bytes=bps // 8 // FPS,
                                            max_payload=MTU, probe_bytes=b"")
        for i, payload in enumerate(payloads):
            seq = (frame * 16 + i) & 0xFFFF
            packet = media.rtp_header(96, seq, frame * 3000, ssrc, i == len(payloads) - 1) + payload
            router.inject(layer.stream, packet, now)


def run(viewers: int, seconds: float, trace: bool) -> dict[str, float]:
    """Simulate `seconds`; timings are meaningless with `trace` (tracemalloc slows every allocation)."""
    router = _fastpath.Router(-1, 2)
    router.capture(True)
    codec = SimpleNamespace(name="VP8", payload_type=96, rtx_payload_type=None)
    track = _track(codec)  # type: ignore[arg-type]
    audio_track = SimpleNamespace(kind="audio", layers=[], spec=SimpleNamespace(codec=SimpleNamespace(name="opus")))
    stream = SimpleNamespace(tracks=[audio_track, track], viewers=set(), publisher=None)
    manager = _Manager(router)
    manager.streams["bench"] = stream
    control = SimulcastControl(manager)
    _publish(router, track, 0, 0.0)
    if trace:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    sessions = []
    for i in range(viewers):
        ep = _fastpath.Endpoint()
        subs = []
        for index, kind in ((0, "audio"), (1, "video")):
            spec = SimpleNamespace(ssrc=10_000 + 2 * i + index, payload_type=96, extensions={}, transport_cc=True, remb=False,
                                   source_index=index)
            subs.append(Subscription(ep, spec, kind, 90000 if kind == "video" else 48000))  # type: ignore[arg-type]
        session = _Session(id=f"v{i}", closed=False, stream=stream, subscriptions=subs, rtcp_in=Counter(),
                                  peer=SimpleNamespace(endpoint=ep, connected_at=0.0, srtp_profile=1))
        control.add_viewer(session, {}, 0.0)
        subs[1].attach(track, control.choose_layer(track, subs[1], session))
        stream.viewers.add(session)
        sessions.append(session)
    gc.collect()
    setup = tracemalloc.get_traced_memory()[0] - before if trace else 0
    rng = random.Random(1)
    feedback_s = tick_s = 0.0
    feedbacks = ticks = 0
    now = 0.0
    frame = 1
    next_frame = next_audio = 0.0
    next_feedback = next_tick = FEEDBACK_S
    pending: list[tuple[int, int]] = []  # (transport-wide seq, arrival µs) not yet reported
    fb_count = 0
    while now < seconds:
        now = round(now + 0.001, 6)
        manager.now = now
        sends = []
        if now >= next_frame:
            next_frame += 1 / FPS
            _publish(router, track, frame, now)
            frame += 1
            sends += [MTU + 60] * (FRAME_BYTES // MTU) + [FRAME_BYTES % MTU + 60]
        if now >= next_audio:
            next_audio += 0.02
            sends.append(160)
        for size in sends:  # every viewer sent the same: one send log pattern for all
            for session in sessions:
                seq = _fastpath.record_sent(session.peer.endpoint, now, size)
            pending.append((seq, int((now + 0.02 + rng.uniform(0, 0.002)) * 1e6)))
        if now >= next_feedback:
            next_feedback += FEEDBACK_S
            ready = [(s, a) for s, a in pending if a <= now * 1e6]
            pending = pending[len(ready):]
            if ready:
                packets = rtcp.build_transport_cc(1, 2, ready, fb_count)
                fb_count += len(packets)
                compound = rtcp.serialize([rtcp.ReceiverReport(1, []), *packets])
                t0 = time.perf_counter()
                for session in sessions:
                    control.on_viewer_rtcp(session, compound, now)
                feedback_s += time.perf_counter() - t0
                feedbacks += len(sessions)
        if now >= next_tick:
            next_tick += TICK_S
            t0 = time.perf_counter()
            control.tick(now)
            tick_s += time.perf_counter() - t0
            ticks += 1
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before if trace else 0
    tracemalloc.stop()
    return {
        "feedback_us": 1e6 * feedback_s / feedbacks, "feedbacks": feedbacks,
        "tick_us": 1e6 * tick_s / (ticks * viewers), "ticks": ticks,
        "setup_kib": setup / viewers / 1024, "grown_kib": grown / viewers / 1024,
        "steady": sum(v.control.last_reason == "steady" for v in control.viewers.values()),
        "estimate": sum(v.control.bwe.estimate_bps for v in control.viewers.values()) / viewers,
        "decisions": getattr(control, "decisions", ticks * viewers) / (viewers * seconds),
        "ring_kib": sum(_ring_bytes(v.control.bwe) for v in control.viewers.values()) / viewers / 1024,
    }


def _ring_bytes(bwe) -> int:
    """C memory of the estimator windows not seen by tracemalloc (their burst ring, 40 B a burst)."""
    windows = getattr(bwe, "windows", None)
    return 40 * windows.bursts_held[1] if hasattr(windows, "bursts_held") else 0


def main(viewers: int = 200, seconds: float = 10.0) -> None:
    r = run(viewers, seconds, False)
    m = run(viewers, 3.0, True)
    print(f"{viewers} viewers, {seconds:.0f} s simulated; {r['steady']} steady, mean estimate {r['estimate'] / 1e6:.2f} Mbit/s")
    print(f"feedback: {r['feedback_us']:7.2f} µs per viewer feedback ({r['feedbacks']} feedbacks)")
    print(f"tick:     {r['tick_us']:7.2f} µs per viewer per tick ({r['ticks']} ticks of {TICK_S * 1000:.0f} ms; "
          f"{r['decisions']:.1f} decisions per viewer per second)")
    print(f"memory:   {m['setup_kib']:7.1f} KiB per viewer at join, {m['grown_kib']:.1f} KiB after 3 s "
          f"(tracemalloc: Python allocations) + {m['ring_kib']:.1f} KiB C burst ring; C send logs not included")


if __name__ == "__main__":
    main(*(int(a) if i == 0 else float(a) for i, a in enumerate(sys.argv[1:])))
