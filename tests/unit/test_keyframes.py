"""KeyframeRequester (core/keyframes.py): one outstanding, retry, minimum interval, merging."""

from sfu.core import keyframes
from sfu.core.keyframes import KeyframeRequester


def test_merges_wants_and_keeps_one_request_outstanding():
    k = KeyframeRequester()
    k.want(0.0)
    assert k.poll(0.0)
    for t in (0.1, 0.2, 0.3):
        k.want(t)
        assert not k.poll(t)
    assert k.suppressed == 3 and k.sent == 1


def test_retries_when_no_keyframe_arrives_and_respects_the_minimum_interval():
    k = KeyframeRequester()
    k.want(0.0)
    assert k.poll(0.0)
    assert not k.poll(keyframes.RETRY_S - 0.01)
    assert k.poll(keyframes.RETRY_S)
    k.keyframe_arrived(keyframes.RETRY_S + 0.05)
    k.want(keyframes.RETRY_S + 0.1)
    assert not k.poll(keyframes.RETRY_S + 0.1)  # too soon after the last request
    assert k.poll(keyframes.RETRY_S + keyframes.MIN_INTERVAL_S)


def test_a_keyframe_older_than_the_want_does_not_answer_it():
    k = KeyframeRequester()
    k.want(5.0)
    k.keyframe_arrived(4.0)  # seen late by the poller: it came before anyone asked
    assert k.wanted_since == 5.0 and k.poll(5.0)
