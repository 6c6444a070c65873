"""The keyframe cache: a viewer that joins between keyframes starts at once, continuous numbers."""

from harness import Forwarder, parse, rtp, vp8_payload


def _feed(fwd: Forwarder, frames: int, start_frame: int = 0, now: float = 0.0, key_every: int = 60) -> float:
    for frame in range(start_frame, start_frame + frames):
        for part in range(3):
            seq = 1000 + frame * 3 + part
            key = frame % key_every == 0 and part == 0
            fwd.inject(rtp(seq, frame * 3000, 0x1111, vp8_payload(key, part == 0), marker=part == 2), now)
        now += 1 / 30
    return now


def test_new_viewer_replays_the_gop_then_continues_live():
    fwd = Forwarder()
    now = _feed(fwd, 40)  # keyframe at frame 0, then 39 delta frames: 120 packets cached
    assert fwd.stream.keyframe_cache[:1] == (120,)
    out, rx = fwd.add_viewer(0xAAAA, connected=False)
    assert fwd.router.replay_cache(fwd.stream, out, now) == 0  # not sendable yet: nothing sent
    ep, tx = out.owner
    fwd.connect(ep, tx)
    assert fwd.router.replay_cache(fwd.stream, out, now) == 120
    _feed(fwd, 5, 40, now)
    seqs, stamps = [], []
    for datagram in fwd.take():
        _, seq, ts, ssrc = parse(rx.unprotect(datagram))
        assert ssrc == 0xAAAA
        seqs.append(seq)
        stamps.append(ts)
    assert seqs == list(range(1000, 1000 + 135))  # continuous from the viewer's first number
    # The cached group is compressed to 1 ms (90 ticks) per frame so the burst plays at the live
    # edge; live frames then continue at the source spacing (3000) from the last cached frame.
    assert stamps[0] == 5000
    frame_stamps = sorted(set(stamps))
    assert frame_stamps[:40] == [5000 + 90 * i for i in range(40)]
    assert frame_stamps[40:] == [5000 + 90 * 39 + 3000 * i for i in range(1, 6)]
    assert all(b >= a for a, b in zip(stamps, stamps[1:], strict=False))
    assert fwd.router.replay_cache(fwd.stream, out, now) == 0  # started: never replayed twice
    assert fwd.stream.cache_hits == 1


def test_cache_off_or_stale_means_wait_for_a_keyframe():
    fwd = Forwarder(keyframe_cache=False)
    now = _feed(fwd, 10)
    out, _ = fwd.add_viewer(0xAAAA)
    assert fwd.router.replay_cache(fwd.stream, out, now) == 0
    fwd2 = Forwarder()
    now = _feed(fwd2, 10)
    out2, _ = fwd2.add_viewer(0xBBBB)
    assert fwd2.router.replay_cache(fwd2.stream, out2, now + 3.5) == 0  # older than 3 s
    assert out2.need_keyframe
