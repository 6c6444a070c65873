"""Fuzz target: trickle ICE fragments (sfu.wire.sdpfrag.parse_sdpfrag, RFC 8840 PATCH bodies).

Crash: any exception other than `BadRequest` from the parser, or from the accessors the session
code calls on a parsed fragment (`credentials`, `all_candidates`, `complete`); a kept candidate that
`is_valid_candidate` refuses.
"""

from __future__ import annotations

from _common import instrumented, main

with instrumented(__name__):
    from sfu.errors import BadRequest
    from sfu.wire import sdpfrag


def check(data: bytes) -> None:
    try:
        frag = sdpfrag.parse_sdpfrag(data)
    except BadRequest:
        return
    ufrag, pwd = frag.credentials()
    assert ufrag is None or isinstance(ufrag, str)
    assert pwd is None or isinstance(pwd, str)
    for mid, candidate in frag.all_candidates():
        assert mid is None or isinstance(mid, str)
        assert sdpfrag.is_valid_candidate(candidate), candidate
    assert isinstance(frag.complete, bool)


if __name__ == "__main__":
    main(check)
