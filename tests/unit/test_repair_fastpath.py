"""The fast path's repair structures through their Python hooks: received bitmap, RED helpers."""

import socket
import struct

from sfu import _fastpath


def _packet(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq, seq * 960, 0x42) + b"\x01\x02\x03"


def test_received_bitmap_records_gaps_and_drops_duplicates():
    router = _fastpath.Router(-1, socket.AF_INET)
    router.capture(True)
    st = _fastpath.InStream(None, 0x42, _fastpath.CODEC_AUDIO, 111, 48000)
    for seq in (10, 11, 14, 12, 12, 14):
        router.inject(st, _packet(seq), 1.0)
    events = router.take_loss_events()
    assert events == [st]
    gaps, overflowed = st.take_gaps()
    assert not overflowed and len(gaps) == 1 and gaps[0][1] == 2
    first = gaps[0][0]
    assert st.missing([first, first + 1]) == [first + 1]  # 12 came late, 13 is still missing
    counts = st.repair_counts
    assert counts["duplicates"] == 2 and counts["filled"] == 1 and st.packets == 4
    assert router.take_loss_events() == []


def test_red_primary_and_payload_type_rewrite():
    # one redundant block (PT 111, 3 bytes) then the primary (RFC 2198 §3)
    red = bytes([0x80 | 111, 0x00, 0x00 | 0, 3, 111]) + b"old" + b"primary"
    assert _fastpath.red_primary_py(red) == b"primary"
    rewritten = _fastpath.red_rewrite_pts_py(red, 111, 109)
    assert rewritten[0] == 0x80 | 109 and rewritten[4] == 109 and rewritten[5:] == red[5:]
    assert _fastpath.red_primary_py(bytes([0x80 | 111, 0, 0])) is None
