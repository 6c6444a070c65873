"""sfu/core/quality.py on a fake clock with stand-in sessions: join and first-keyframe times, loss
per report interval, freezes inferred once per stall."""

from __future__ import annotations

from types import SimpleNamespace as NS

from sfu.core.quality import JOIN_POLL_S, Histogram, Quality
from sfu.wire.rtcp import ReportBlock


def _setup():
    out = NS(packets=0, keyframes_forwarded=0, clock_rate=90000)
    sub = NS(kind="video", out=out, layer=object(), last_report=None)
    stream = NS(live=True)
    session = NS(id="s1", subscriptions=[sub], stream=stream)
    repair = NS(layer_stats=lambda layer: {}, subscription_stats=lambda sub: {"rtt_ms": 20.0})
    manager = NS(sessions={"s1": session}, streams={}, repair=repair)
    return Quality(manager), session, sub, out


def test_histogram_buckets_are_cumulative_with_inf():
    h = Histogram((0.1, 0.5))
    for v in (0.05, 0.1, 0.3, 2.0):
        h.observe(v)
    assert h.cumulative() == [("0.1", 2), ("0.5", 3), ("+Inf", 4)] and h.count == 4 and abs(h.sum - 2.45) < 1e-9


def test_join_and_first_keyframe_times_and_the_poll_deadline():
    q, session, sub, out = _setup()
    q.viewer_created(session, 10.0)
    assert q.next_deadline() == 10.0 + JOIN_POLL_S
    q.poll(10.1)
    assert q.join_s.count == 0
    out.packets = 3  # audio or a delta frame first: joined, no keyframe yet
    q.poll(10.2)
    out.keyframes_forwarded = 1
    q.poll(10.35)
    stats = q.viewer_stats(session)
    assert stats["join_ms"] == 200.0 and stats["first_keyframe_ms"] == 350.0
    assert q.join_s.count == 1 and q.first_keyframe_s.count == 1
    assert q.next_deadline() is None  # nothing joining: no extra sweeps


def test_viewer_loss_jitter_rtt_and_freezes_once_per_stall():
    q, session, sub, out = _setup()
    q.viewer_created(session, 0.0)
    out.packets, out.keyframes_forwarded = 10, 1
    q.poll(0.1)
    sub.last_report = ReportBlock(1, 64, 5, 100, 900, 0, 0)  # 64/256 lost, jitter 900 ticks = 10 ms
    q.report_tick(1.0)
    stats = q.viewer_stats(session)
    assert stats["loss"] == 0.25 and stats["jitter_ms"] == 10.0 and q.rtt_s["viewer"].count == 1
    q.report_tick(2.0)  # the same report again: not observed twice; no packet sent: a freeze
    assert q.loss["viewer"].count == 1 and q.viewer_stats(session)["freezes"] == 1
    q.report_tick(3.0)  # still stalled: the same freeze
    assert q.freezes == 1 and q.viewer_stats(session)["frozen"] is True
    out.packets = 20
    q.report_tick(4.0)
    assert q.viewer_stats(session)["frozen"] is False
    q.report_tick(5.0)
    assert q.freezes == 2
    session.stream.live = False  # an ended show is no freeze
    q.report_tick(6.0)
    q.report_tick(7.0)
    assert q.freezes == 2
