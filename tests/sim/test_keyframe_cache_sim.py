"""The keyframe cache: a viewer that joins between keyframes starts at once, continuous numbers."""

import pytest
from harness import Forwarder, parse, rtp, vp8_payload

from sfu import _fastpath


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
    # a 2 s interval seen twice: the group may reach 1.5 x 2 s = 3 s (KF_AGE_FLOOR_S), no older
    fwd2 = Forwarder()
    now = _feed(fwd2, 130)  # keyframes at frames 0, 60, 120: the cached group started at 4.0 s
    assert fwd2.stream.keyframe_cache_sizing[1:] == (pytest.approx(2.0), pytest.approx(3.0))
    out2, _ = fwd2.add_viewer(0xBBBB)
    assert fwd2.router.replay_cache(fwd2.stream, out2, 4.0 + 3.1) == 0  # older than 3 s
    assert out2.need_keyframe
    assert fwd2.router.replay_cache(fwd2.stream, out2, 4.0 + 2.9) > 0
    # a stream's first group, no interval known yet: up to the ceiling (KF_MAX_AGE_S, 15 s)
    fwd3 = Forwarder()
    now = _feed(fwd3, 10)
    assert fwd3.stream.keyframe_cache_sizing[1:] == (None, _fastpath.KF_MAX_AGE_S)
    out3, _ = fwd3.add_viewer(0xCCCC)
    assert fwd3.router.replay_cache(fwd3.stream, out3, _fastpath.KF_MAX_AGE_S + 0.1) == 0
    assert fwd3.router.replay_cache(fwd3.stream, out3, _fastpath.KF_MAX_AGE_S - 0.1) == 30


# -- long keyframe intervals (OBS setups: 4-5 s, some 10 s) ------------------------------------

FPS = 30
PACKET = 1200


def _publish(fwd: Forwarder, seconds: float, gop_s: float, bitrate: int, start: float = 0.0,
             seq0: int = 0) -> tuple[float, int]:
    """An OBS-like publisher on a fake clock: `bitrate` in frames of PACKET-byte packets, a
    keyframe every `gop_s` (PLIs ignored: nothing else makes one). Returns (now, next seq)."""
    per_frame = max(1, round(bitrate / 8 / FPS / PACKET))
    frames = round(seconds * FPS)
    first = round(start * FPS)
    seq = seq0
    for frame in range(first, first + frames):
        key = frame % round(gop_s * FPS) == 0
        for part in range(per_frame):
            payload = vp8_payload(key and part == 0, part == 0, PACKET)
            fwd.inject(rtp(seq, frame * 3000, 0x1111, payload, marker=part == per_frame - 1), frame / FPS)
            seq += 1
    return (first + frames) / FPS, seq


@pytest.mark.parametrize("gop_s", [5.0, 10.0])
def test_long_interval_group_replayed_whole_just_before_the_next_keyframe(gop_s, capsys):
    """A viewer joining 1/30 s before the next keyframe still starts from the cache (the 3 s bound
    made it wait ~2 s for a 5 s interval); memory stays within the per-layer budget."""
    bitrate = 4_000_000
    fwd = Forwarder()
    now, _ = _publish(fwd, 3 * gop_s - 1 / FPS, gop_s, bitrate)  # ends one frame before a keyframe
    packets, used, age, valid = fwd.stream.keyframe_cache
    footprint, interval, max_age = fwd.stream.keyframe_cache_sizing
    per_frame = round(bitrate / 8 / FPS / PACKET)
    assert valid and packets == (round(gop_s * FPS) - 1) * per_frame and age == pytest.approx(gop_s - 2 / FPS)
    assert interval == pytest.approx(gop_s) and max_age == pytest.approx(1.5 * gop_s)
    assert used <= footprint <= _fastpath.KEYFRAME_CACHE_MAX_BYTES + 512 * 1024
    out, _ = fwd.add_viewer(0xAAAA)
    assert fwd.router.replay_cache(fwd.stream, out, now) == packets
    assert not out.need_keyframe
    with capsys.disabled():
        print(f"\nkeyframe cache, {gop_s:.0f} s interval at {bitrate / 1e6:.0f} Mbit/s: {packets} packets, "
              f"{used / 2**20:.2f} MiB cached, {footprint / 2**20:.2f} MiB allocated per layer")


def test_group_over_the_budget_is_dropped_and_memory_stays_bounded():
    """10 s at 8 Mbit/s is 10 MB: over KF_BUDGET_BYTES. The group is given up (counted), new viewers
    wait for the next keyframe as without a cache, and the allocation never exceeds the budget."""
    fwd = Forwarder()
    now, seq = _publish(fwd, 9.0, 10.0, 8_000_000)
    packets, used, _, valid = fwd.stream.keyframe_cache
    footprint = fwd.stream.keyframe_cache_sizing[0]
    assert not valid and fwd.stream.repair_counts["cache_overflows"] == 1
    slots = _fastpath.KEYFRAME_CACHE_MAX_PACKETS * 32
    assert footprint <= _fastpath.KEYFRAME_CACHE_MAX_BYTES + slots + 4096
    out, _ = fwd.add_viewer(0xAAAA)
    assert fwd.router.replay_cache(fwd.stream, out, now) == 0 and out.need_keyframe
    # the next keyframe starts a group again; smaller groups give the memory back (halving)
    now, seq = _publish(fwd, 20.0, 2.0, 500_000, start=10.0, seq0=seq)
    packets, used, _, valid = fwd.stream.keyframe_cache
    # 144 KB groups now: the 8 MiB arena was halved once per group down to 512 KiB (< 4 x the group)
    assert valid and used < 150_000 and fwd.stream.keyframe_cache_sizing[0] <= 2**20
