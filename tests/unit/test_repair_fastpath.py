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


# ---- resends rebuilt from the layer's store (_resend.pxi) ---------------------------------------

PT = 96
KEY16 = bytes(range(16))
SALT12 = bytes(range(12))


def _vp8(pic: int, key: bool, start: bool = True, size: int = 300) -> bytes:
    """RFC 7741 descriptor with a 15-bit picture id (X, I bits), then the payload header."""
    descriptor = bytes([0x90 if start else 0x80, 0x80, 0x80 | ((pic >> 8) & 0x7F), pic & 0xFF])
    header = bytes([0x00 if key else 0x01]) if start else b"\x55"
    return descriptor + header + bytes(range(size % 251)) + bytes(size - size % 251)


def _rtp_ext(seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    """One-byte header extensions (RFC 8285): id 2 (3 bytes, forwarded) and id 4 (stripped)."""
    body = bytes([0x22]) + bytes([seq & 0xFF, 1, 2]) + bytes([0x40, 9])
    body += b"\0" * (-len(body) % 4)
    return (struct.pack("!BBHII", 0x90, (0x80 if marker else 0) | PT, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
            + struct.pack("!HH", 0xBEDE, len(body) // 4) + body + payload)


def _viewer(router, rtx: bool):
    ep = _fastpath.Endpoint()
    tx = _fastpath.SrtpContext(_fastpath.SRTP_AEAD_AES_128_GCM, KEY16, SALT12)
    rx = _fastpath.SrtpContext(_fastpath.SRTP_AEAD_AES_128_GCM, KEY16, SALT12)
    ep.set_srtp(tx, tx)
    router.set_path(ep, ("127.0.0.1", 9))
    out = _fastpath.OutTrack(ep, 0xAAAA, PT, 90000, True, 1000, 5000)
    out.twcc_id = 5
    out.abs_send_time_id = 3
    out.map_extension(2, 7)
    out.enable_retransmissions()
    if rtx:
        out.set_rtx(0xBBBB, 97, 300)
    out.set_retransmission_policy(1e9, 1e9, 0.0)
    out.rtx_tokens = 1e9
    return out, rx


def _send(router, st, rx, frames, first_seq, first_pic, now, step=0.003, key_first=True):
    """`frames` frames of 3 packets each; returns ({viewer seq: (datagram, plaintext)}, now)."""
    sent = {}
    seq = first_seq
    for f in range(frames):
        for k in range(3):
            payload = _vp8(first_pic + f, key_first and f == 0, start=k == 0, size=200 + 37 * k)
            router.inject(st, _rtp_ext(seq, 90000 + f * 3000, st.ssrc, payload, marker=k == 2), now)
            seq += 1
            now += step
            for d in router.take_captured():
                plain = rx.unprotect(d)
                if not plain[0] & 0x20:                          # media, not a padding probe
                    sent[int.from_bytes(plain[2:4], "big")] = (d, plain)
    return sent, now


def _scenario(rtx: bool):
    """Rewrite epochs of every kind: a start, a padding probe, a layer switch, a replay."""
    router = _fastpath.Router(-1, socket.AF_INET)
    router.capture(True)
    low = _fastpath.InStream(None, 0x1111, _fastpath.CODEC_VP8, PT, 90000)
    high = _fastpath.InStream(None, 0x2222, _fastpath.CODEC_VP8, PT, 90000)
    high.enable_keyframe_cache(True)
    out, rx = _viewer(router, rtx)
    low.add(out)
    assert low.retransmission_store is not None and high.retransmission_store is None
    _fastpath.set_source(out, low)
    sent, now = _send(router, low, rx, 3, 100, 40, 1.0)
    _fastpath.add_padding(out, 600)                                  # a probe after the next frame
    more, now = _send(router, low, rx, 2, 109, 43, now, key_first=False)
    sent.update(more)
    assert _fastpath.source_state(out)["pad_packets"] >= 1
    _, now = _send(router, high, rx, 2, 7000, 900, now)              # not yet: high feeds the cache
    high.add(out)
    _fastpath.switch_source(out, high)
    out.request_rebase(True)
    assert router.replay_cache(high, out, now) > 0                   # switch + replay of 2 frames
    for d in router.take_captured():
        plain = rx.unprotect(d)
        sent[int.from_bytes(plain[2:4], "big")] = (d, plain)
    more, now = _send(router, high, rx, 2, 7006, 902, now, key_first=False)
    sent.update(more)
    out.keyframe_floor = 0   # the policy would ignore NACKs from before the replayed keyframe
    return router, out, rx, sent, now


def test_same_ssrc_resend_is_byte_identical_across_epochs():
    router, out, rx, sent, now = _scenario(rtx=False)
    assert out.rewrite_epochs >= 4
    seqs = sorted(sent)
    missed = router.resend(out, seqs, now + 0.1)
    resent = router.take_captured()
    assert missed == [] and len(resent) == len(seqs)
    # same plaintext under the same SRTP index: the very same datagram (AEAD nonce reuse is safe)
    assert resent == [sent[s][0] for s in seqs]
    counts = out.retransmissions
    assert counts["sent"] == len(seqs) and counts["missing"] == 0
    # the probe's padding packets took numbers between two epochs: they are not rebuilt as media
    padding = sorted(set(range(seqs[0], seqs[-1])) - set(seqs))
    assert padding and router.resend(out, padding, now + 0.2) and router.take_captured() == []


def test_rtx_resend_wraps_the_rebuilt_packet_with_a_fresh_transport_seq():
    router, out, rx, sent, now = _scenario(rtx=True)
    seqs = sorted(sent)
    twcc_before = out.endpoint.twcc_next
    router.resend(out, seqs, now + 0.1)
    resent = router.take_captured()
    assert len(resent) == len(seqs)
    for seq, d in zip(seqs, resent, strict=True):
        original = sent[seq][1]
        wrapped = rx.unprotect(d)
        assert wrapped[1] & 0x7F == 97 and int.from_bytes(wrapped[8:12], "big") == 0xBBBB
        hdr = 12 + 4 + 4 * int.from_bytes(original[14:16], "big")
        assert int.from_bytes(wrapped[hdr:hdr + 2], "big") == seq                  # RFC 4588 OSN
        assert wrapped[hdr + 2:] == original[hdr:]                                  # same payload
        assert wrapped[4:8] == original[4:8]                                        # same timestamp
    assert out.endpoint.twcc_next == twcc_before + len(seqs)
    padding = sorted(set(range(seqs[0], seqs[-1])) - set(seqs))   # no per-packet record with RTX
    assert padding and len(router.resend(out, padding, now + 0.2)) == len(padding)
    assert router.take_captured() == []


def test_resend_misses_what_the_store_no_longer_has_and_recent_ones_wait():
    router, out, rx, sent, now = _scenario(rtx=False)
    seqs = sorted(sent)
    out.set_retransmission_policy(1e9, 1e9, 0.05)
    router.resend(out, seqs[-1:], now + 0.1)
    router.resend(out, seqs[-1:], now + 0.12)                        # within the guard: not again
    assert out.retransmissions["recent"] == 1 and out.retransmissions["sent"] == 1
    missed = router.resend(out, seqs[-1:], now + 3.0)                # older than the store keeps
    assert missed and out.retransmissions["missing"] == 1
    router.take_captured()


def test_a_new_extension_map_stops_resends_of_what_was_sent_before():
    router, out, rx, sent, now = _scenario(rtx=False)
    out.clear_extensions()   # a re-attach: the same bytes could not be rebuilt
    missed = router.resend(out, sorted(sent), now + 0.1)
    assert len(missed) == len(sent) and router.take_captured() == []


def test_viewers_without_nack_allocate_nothing_and_publisher_teardown_frees_stores():
    router = _fastpath.Router(-1, socket.AF_INET)
    st = _fastpath.InStream(None, 0x1111, _fastpath.CODEC_VP8, PT, 90000)
    out = _fastpath.OutTrack(_fastpath.Endpoint(), 0xAAAA, PT, 90000, True)
    st.add(out)
    assert st.retransmission_store is None and out.rewrite_epochs == 0
    nack, _ = _viewer(router, rtx=False)
    st.add(nack)
    assert st.retransmission_store == (0, _fastpath.RTX_STORE_BYTES_VIDEO)
    publisher = _fastpath.Endpoint()
    publisher.bind(0x1111, st)
    publisher.unbind_all()
    assert st.retransmission_store is None
    assert publisher.take_twcc() == []                               # no arrival ring unless set


def test_frames_counted_by_advancing_timestamps():
    """InStream.frames: packets that advance the highest RTP timestamp (one per frame however many
    packets it has; late, reordered and duplicate packets of older frames do not count)."""
    router = _fastpath.Router(-1, socket.AF_INET)
    router.capture(True)
    st = _fastpath.InStream(None, 0x43, _fastpath.CODEC_AUDIO, 111, 48000)

    def packet(seq: int, ts: int) -> bytes:
        return struct.pack("!BBHII", 0x80, 111, seq, ts, 0x43) + b"\x01\x02\x03"

    # frames at ts 0 (2 packets), 3000 (3 packets, one arriving after the next frame), 6000, 9000
    for seq, ts in ((1, 0), (2, 0), (3, 3000), (4, 3000), (6, 6000), (5, 3000), (6, 6000), (7, 9000)):
        router.inject(st, packet(seq, ts), 1.0)
    assert st.frames == 4 and st.packets == 7
