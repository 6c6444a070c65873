"""Fuzz target: SDP offers (sfu.wire.sdp.parse over sfu.wire.sdp_text) and the answers built on a
parsed offer (sfu.core.negotiation.answer_publish, answer_subscribe against real published tracks).

Crash: any exception other than `BadRequest` from `sdp.parse`; any other than `BadRequest` /
`Unprocessable` from the answer functions (the only errors WHIP/WHEP turn into 400/422); a parsed
description whose `to_string()` does not parse again; an answer the server itself cannot parse.
"""

from __future__ import annotations

import importlib.util
import itertools
import os

from _common import ROOT, instrumented, main

with instrumented(__name__):
    from sfu.core import negotiation as neg
    from sfu.errors import BadRequest, Unprocessable
    from sfu.wire import sdp

LOCAL = neg.LocalTransport(
    ice_ufrag="fuzzUfrag",
    ice_pwd="fuzzIcePasswordOf24Chars",
    fingerprint=("sha-256", ":".join(["AB"] * 32)),
    candidates=["candidate:1 1 udp 2130706431 192.0.2.10 8443 typ host"],
)


def _published() -> tuple[neg.PublishedTrack, ...]:
    """Tracks of a real Chrome simulcast publisher and an OBS one (tests/unit/sdp_samples.py)."""
    spec = importlib.util.spec_from_file_location("_sdp_samples", os.path.join(ROOT, "tests", "unit", "sdp_samples.py"))
    assert spec is not None and spec.loader is not None
    samples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(samples)
    tracks = neg.answer_publish(samples.CHROME_PUBLISH_SIMULCAST, LOCAL).tracks
    return tracks + neg.answer_publish(samples.OBS_30_WHIP, LOCAL).tracks


PUBLISHED = _published()


def check(data: bytes) -> None:
    try:
        desc = sdp.parse(data)
    except BadRequest:
        pass
    else:
        sdp.parse(desc.to_string())
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        pub = neg.answer_publish(text, LOCAL)
    except (BadRequest, Unprocessable):
        pass
    else:
        sdp.parse(pub.sdp)
    try:
        sub = neg.answer_subscribe(text, LOCAL, PUBLISHED, itertools.count(0x1000).__next__, "fuzz")
    except (BadRequest, Unprocessable):
        pass
    else:
        sdp.parse(sub.sdp)


if __name__ == "__main__":
    main(check)
