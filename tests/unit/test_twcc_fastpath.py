"""Transport-cc feedback from a viewer in C (`_fastpath.FeedbackAggregator`, sfu/_twcc.pxi):
wire vectors, the compound split, sequence unwrapping, repeats, malformed input, and equality with
the pure-Python reference (`twcc.FeedbackMatcher` + `twcc.SummaryBuilder`)."""

from __future__ import annotations

import random

import pytest

from sfu import _fastpath
from sfu.core.twcc import FeedbackMatcher, SummaryBuilder
from sfu.wire import rtcp

# libwebrtc's unit-test vector (also in test_rtcp.py): base 1, 9 packets, all received
LIBWEBRTC_TWCC = bytes.fromhex("afcd0007" "00000001" "dd586eb6" "00010009" "5e911000" "2009" "1c0c2c38000400081801")
# pion: 2-bit vector with a loss and a large delta, then losses (base 34108)
PION_TWCC_MIXED = bytes.fromhex("afcd0007" "9b74f61f" "9371dcbc" "853c0009" "63f916b3" "d5520030" "9baa6aaa7b010901")
FIELDS = (
    "feedbacks", "malformed", "matched", "lost", "acked", "unknown", "duplicates", "acked_bytes", "max_send",
    "continues_group", "bursts", "probe_count", "probe_lost", "probe_bytes", "probe_first_size",
    "probe_first_send", "probe_first_arrival", "probe_last_send", "probe_last_arrival",
)


def _endpoint(first_seq: int, sends: list[tuple[float, int]]) -> _fastpath.Endpoint:
    ep = _fastpath.Endpoint()
    ep.twcc_next = first_seq
    for t, size in sends:
        _fastpath.record_sent(ep, t, size)
    return ep


def _reference(ep, data: bytes, builder: SummaryBuilder, matcher: FeedbackMatcher, window=(float("inf"), float("-inf"))):
    unknown, duplicates = matcher.unknown, matcher.duplicates
    results = [r for p in rtcp.parse_compound(data) if isinstance(p, rtcp.TransportCc) for r in matcher.match(p)]
    summary = builder.summarize(results, *window)
    summary.unknown, summary.duplicates = matcher.unknown - unknown, matcher.duplicates - duplicates
    return summary


def _same(a, b) -> None:
    assert tuple(getattr(a, f) for f in FIELDS) == tuple(getattr(b, f) for f in FIELDS)


def test_libwebrtc_vector_matches_send_log() -> None:
    ep = _endpoint(1, [(10.0 + i * 0.001, 1000 + i) for i in range(9)])
    summary, rest = _fastpath.FeedbackAggregator(ep).feed(LIBWEBRTC_TWCC)
    assert rest is None
    assert (summary.feedbacks, summary.matched, summary.acked, summary.lost) == (1, 9, 9, 0)
    assert summary.acked_bytes == sum(1000 + i for i in range(9)) and summary.max_send == 10.008


def test_bursts_follow_the_5ms_grouping() -> None:
    ep = _endpoint(1, [(10.0 + i * 0.0012, 1000 + i) for i in range(9)])
    agg = _fastpath.FeedbackAggregator(ep)
    summary, _ = agg.feed(LIBWEBRTC_TWCC)
    assert [b[4] for b in summary.bursts] == [5, 4]  # sent at +0..4.8 ms, then +6..9.6 ms
    first = summary.bursts[0]
    assert first[0] == 10.0 and first[1] == pytest.approx(10.0048) and first[5] == sum(1000 + i for i in range(5))
    # arrivals: reference time 6197520 x 64 ms, then the deltas (7, 3, 11, 14, 0 ms)
    base = 6197520 * 0.064
    assert first[2] == pytest.approx(base + 0.007) and first[3] == pytest.approx(base + 0.035)
    assert not summary.continues_group
    _fastpath.record_sent(ep, 10.0 + 9 * 0.0012, 77)  # still within 5 ms of the open group's first
    again = rtcp.serialize(rtcp.build_transport_cc(1, 2, [(10, 2_000_000)], 1))
    summary, _ = agg.feed(again)
    assert summary.continues_group and summary.bursts[0][4] == 1


def test_losses_unknown_and_wrap_unwrapped_against_the_send_log() -> None:
    # PION_TWCC_MIXED names 34108..34116; we sent from 34110 on in the 2nd epoch (65536 + ...)
    start = 65536 + 34110
    ep = _endpoint(start, [(5.0 + i * 0.02, 500) for i in range(10)])
    summary, _ = _fastpath.FeedbackAggregator(ep).feed(PION_TWCC_MIXED)
    assert summary.unknown == 2  # 34108, 34109: not in the log
    assert (summary.matched, summary.lost, summary.acked) == (7, 3, 4)
    _same(summary, _reference(ep, PION_TWCC_MIXED, SummaryBuilder(), FeedbackMatcher(ep)))


def test_compound_split_keeps_the_other_packets() -> None:
    ep = _endpoint(1, [(1.0, 100)] * 9)
    rr = rtcp.ReceiverReport(7, [rtcp.ReportBlock(9, 1, 2, 3, 4, 5, 6)])
    pli = rtcp.Pli(7, 9)
    data = rtcp.serialize([rr]) + LIBWEBRTC_TWCC + rtcp.serialize([pli]) + LIBWEBRTC_TWCC
    summary, rest = _fastpath.FeedbackAggregator(ep).feed(data)
    assert rtcp.parse_compound(rest) == [rr, pli]
    assert summary.feedbacks == 2 and summary.matched == 9 and summary.duplicates == 9  # repeated: used once
    only = rtcp.serialize([rr, pli])
    summary, rest = _fastpath.FeedbackAggregator(ep).feed(only)
    assert summary is None and rest is only  # nothing for C: handed back untouched


@pytest.mark.parametrize("data", [b"\x80\xcd", bytes.fromhex("40cd0000"), LIBWEBRTC_TWCC[:-4], LIBWEBRTC_TWCC + b"\x80"])
def test_compound_whose_headers_do_not_walk_is_left_to_python(data: bytes) -> None:
    ep = _endpoint(1, [(1.0, 100)] * 9)
    summary, rest = _fastpath.FeedbackAggregator(ep).feed(data)
    assert summary is None and rest is data
    with pytest.raises(rtcp.RtcpError):
        rtcp.parse_compound(data)


def test_malformed_feedback_is_counted_and_unused() -> None:
    ep = _endpoint(1, [(1.0, 100)] * 9)
    bad = bytearray(LIBWEBRTC_TWCC)
    bad[2:4] = (5).to_bytes(2, "big")  # 20-byte body: the chunk is there, the deltas are not
    pli = rtcp.serialize([rtcp.Pli(7, 9)])
    agg = _fastpath.FeedbackAggregator(ep)
    summary, rest = agg.feed(bytes(bad[:24]) + pli)
    assert (summary.malformed, summary.matched) == (1, 0) and rest == pli and agg.malformed == 1
    reserved = bytearray(LIBWEBRTC_TWCC)
    reserved[20:22] = (0x6000 | 9).to_bytes(2, "big")  # run of the reserved symbol 3
    summary, _ = agg.feed(bytes(reserved))
    assert summary.malformed == 1 and summary.matched == 0


@pytest.mark.parametrize("seed", range(6))
def test_random_feedback_equals_the_python_reference(seed: int) -> None:
    """Random send bursts, loss, reordering-free arrivals, repeats, probe windows, wrap."""
    rng = random.Random(seed)
    t = 50.0
    sends = []
    while len(sends) < 3000:
        for _ in range(rng.choice([1, 1, 3, 8, 20])):
            sends.append((t, rng.randint(60, 1250)))
            t += rng.choice([0.0, 0.0001, 0.0004, 0.002])
        t += rng.uniform(0.001, 0.03)
    first = rng.choice([0, 65_000, 3 * 65536 - 700])
    ep = _endpoint(first, sends)
    agg, builder, matcher = _fastpath.FeedbackAggregator(ep), SummaryBuilder(), FeedbackMatcher(ep)
    arrival = 1000.0
    arrivals = []
    for i, (t_send, _size) in enumerate(sends):
        arrival = max(arrival, t_send + 900.0 + rng.uniform(0, 0.01))
        arrivals.append((first + i, None if rng.random() < 0.05 else int(arrival * 1e6)))
    pos = 0
    while pos < len(arrivals):
        n = rng.randint(1, 120)
        chunk = arrivals[max(0, pos - rng.choice([0, 0, 5])) : pos + n]  # sometimes repeat the tail
        pos += n
        packets = rtcp.build_transport_cc(1, 2, chunk, 0)
        data = rtcp.serialize([rtcp.ReceiverReport(1, []), *packets])
        mid = sends[min(pos, len(sends) - 1)][0]
        window = (mid - 0.05, mid + 0.01) if rng.random() < 0.5 else (float("inf"), float("-inf"))
        ours, rest = agg.feed(data, *window)
        if not packets:
            continue
        assert rest is not None
        theirs = _reference(ep, data, builder, matcher, window)
        _same(ours, theirs)
    assert agg.matched == matcher.matched


def test_send_log_grows_to_hold_a_second_and_no_more():
    # 1,000 packets/s: a second of records must stay findable (the ring doubles from 256 as needed)
    ep = _fastpath.Endpoint()
    for i in range(1500):
        _fastpath.record_sent(ep, 1.0 + i * 0.001, 1000 + i % 7)
    recent = _fastpath.sent_packets(ep, 500, 1000)
    assert all(r is not None for r in recent)
    assert [r[1] for r in recent] == [1000 + i % 7 for i in range(500, 1500)]
    assert abs(recent[0][0] - 1_500_000) <= 1
    # 10 packets/s: nothing younger than a second is ever overwritten, so the ring stays at 256
    # records and the 257th-newest is gone
    slow = _fastpath.Endpoint()
    for i in range(600):
        _fastpath.record_sent(slow, 1.0 + i * 0.1, 500)
    records = _fastpath.sent_packets(slow, 0, 600)
    assert all(r is not None and r[1] == 500 for r in records[600 - 256 :])
    assert all(r is None for r in records[: 600 - 256])
