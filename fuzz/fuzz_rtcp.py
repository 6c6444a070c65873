"""Fuzz target: RTCP compounds (sfu.wire.rtcp.parse_compound: SR, RR, SDES, BYE, APP, generic NACK,
PLI, FIR, REMB, transport-cc, XR RRTR/DLRR) and the serializer on what parsed.

Crash: any exception other than `RtcpError` from `parse_compound`; a parsed compound that
`serialize` rejects with anything but `RtcpError`; or one whose serialization does not parse back
to the same values (NACK compared as the set of lost numbers, the only lossy field).
"""

from __future__ import annotations

from _common import instrumented, main

with instrumented(__name__):
    from sfu.wire import rtcp


def _norm(packets: list) -> list:
    return [
        (type(p).__name__, p.sender_ssrc, p.media_ssrc, sorted(set(p.lost))) if isinstance(p, rtcp.Nack) else p
        for p in packets
    ]


def check(data: bytes) -> None:
    try:
        packets = rtcp.parse_compound(data)
    except rtcp.RtcpError as exc:
        assert isinstance(exc.reason, str)
        return
    try:
        wire = rtcp.serialize(packets)
    except rtcp.RtcpError:
        return  # e.g. APP data or an unknown packet whose padding was stripped: not 32-bit aligned
    again = rtcp.parse_compound(wire)
    assert _norm(again) == _norm(packets), (packets, again)


if __name__ == "__main__":
    main(check)
