"""Fuzz target: transport-cc feedback from viewers in the Cython fast path (sfu/_twcc.pxi,
`FeedbackAggregator.feed`), differentially against the pure-Python reference (`rtcp.parse_compound`
+ `twcc.FeedbackMatcher` + `twcc.SummaryBuilder`, the same pair tests/unit/test_twcc_fastpath.py
compares on random valid input).

Each run fills an endpoint's send log (start number, times and sizes from the input), then feeds a
few fuzzed RTCP compounds (either raw, or a fuzzed transport-cc body under a correct header, plus an
optional receiver report) in order. Crash: a process crash, any exception from `feed`, or, for a
compound the Python parser accepts, a summary that differs from the reference in any field.
Coverage: the C code is not instrumented; libFuzzer sees the harness's and the reference's Python.
"""

from __future__ import annotations

import struct

from _common import Reader, instrumented, main

with instrumented(__name__):
    from sfu import _fastpath as fp
    from sfu.core.twcc import FeedbackMatcher, SummaryBuilder
    from sfu.wire import rtcp

FIELDS = (
    "feedbacks", "malformed", "matched", "lost", "acked", "unknown", "duplicates", "acked_bytes", "max_send",
    "continues_group", "bursts", "probe_count", "probe_lost", "probe_bytes", "probe_first_size",
    "probe_first_send", "probe_first_arrival", "probe_last_send", "probe_last_arrival",
)
STARTS = (0, 1, 65_000, 65_530, 3 * 65536 - 700)


def _compound(r: Reader, op: int) -> bytes:
    body = r.chunk()
    if op & 1 == 0:
        return body  # raw compound
    body = body[:2000]
    pad = -len(body) % 4
    first = 0x80 | rtcp.FMT_TWCC
    if pad and op & 2:  # RFC 3550 §6.4.1 padding, the last octet counts it
        body += bytes(pad - 1) + bytes([pad])
        first |= 0x20
    else:
        body += bytes(pad)
    packet = struct.pack("!BBH", first, rtcp.PT_RTPFB, len(body) // 4) + body
    if op & 4:
        packet = rtcp.serialize([rtcp.ReceiverReport(7, [])]) + packet
    return packet


def check(data: bytes) -> None:
    r = Reader(data)
    mode = r.byte()
    ep = fp.Endpoint()
    ep.twcc_next = STARTS[mode % len(STARTS)] + r.byte()
    t = 50.0
    for _ in range(r.byte() % 200):
        b = r.byte()
        fp.record_sent(ep, t, 60 + 5 * b, 0)
        t += (b & 0x0F) * 0.0004
    agg, builder, matcher = fp.FeedbackAggregator(ep), SummaryBuilder(), FeedbackMatcher(ep)
    window = (50.0 + r.byte() * 0.001, 50.0 + r.byte() * 0.002) if mode & 0x80 else (float("inf"), float("-inf"))
    for _ in range(1 + (mode >> 5 & 3)):
        if not r.left():
            break
        data = _compound(r, r.byte())
        try:
            packets = rtcp.parse_compound(data)
        except rtcp.RtcpError:
            agg.feed(data, *window)  # no reference: only crashes count; the matcher is behind from here
            return
        ours, rest = agg.feed(data, *window)
        unknown, duplicates = matcher.unknown, matcher.duplicates
        feedback = [p for p in packets if isinstance(p, rtcp.TransportCc)]
        if not feedback:
            assert ours is None and rest == data
            continue
        results = [x for p in feedback for x in matcher.match(p)]
        theirs = builder.summarize(results, *window)
        theirs.unknown, theirs.duplicates = matcher.unknown - unknown, matcher.duplicates - duplicates
        a = tuple(getattr(ours, f) for f in FIELDS)
        b = tuple(getattr(theirs, f) for f in FIELDS)
        assert a == b, dict(zip(FIELDS, zip(a, b, strict=True), strict=True))
        others = [p for p in packets if not isinstance(p, rtcp.TransportCc)]
        assert (rest is None) == (not others)
        if rest is not None:
            assert rtcp.parse_compound(rest) == others


if __name__ == "__main__":
    main(check)
