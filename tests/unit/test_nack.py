"""NackGenerator (core/nack.py): reorder wait, retries per RTT, give-up, too much loss."""

from sfu.core import nack
from sfu.core.nack import NackGenerator


def test_waits_for_reordering_then_asks_and_retries_about_once_per_rtt():
    g = NackGenerator()
    g.set_rtt(0.05)
    g.on_gaps([(100, 2)], False, 1.0)
    assert g.poll(1.0, lambda seqs: seqs) == []  # reorder wait
    assert g.next_deadline() == 1.0 + nack.NACK_REORDER_WAIT_S
    t = 1.0 + nack.NACK_REORDER_WAIT_S
    assert g.poll(t, lambda seqs: seqs) == [100, 101]
    assert g.next_deadline() == t + g.retry_interval
    assert g.poll(t + g.retry_interval, lambda seqs: [101]) == [101]  # 100 arrived meanwhile
    assert g.recovered == 1 and g.nacks_sent == 2 and g.seqs_requested == 3


def test_gives_up_after_max_tries():
    g = NackGenerator()
    g.on_gaps([(5, 1)], False, 0.0)
    now, asked = 0.0, 0
    while g.pending:
        now += 1.0
        asked += len(g.poll(now, lambda seqs: seqs))
    assert asked == nack.NACK_MAX_TRIES and g.given_up == 1


def test_too_much_missing_keeps_what_follows_the_keyframe_or_asks_for_one():
    g = NackGenerator()
    g.on_gaps([(1000, 300)], False, 0.0)
    g.on_gaps([(2000, 200)], False, 0.0, last_keyframe_seq=1900)
    assert not g.take_keyframe_needed() and min(g.pending) == 2000
    g.on_gaps([(5000, nack.MAX_MISSING + 10)], False, 0.0, last_keyframe_seq=1900)
    assert g.take_keyframe_needed() and not g.pending
    g.on_gaps([], True, 0.0)  # the fast path's gap ring overflowed
    assert g.take_keyframe_needed()


def test_viewer_request_is_asked_at_once_once():
    g = NackGenerator()
    assert g.request(42, 3.0) and not g.request(42, 3.0)
    assert g.poll(3.0, lambda seqs: seqs) == [42] and g.viewer_requests == 1
