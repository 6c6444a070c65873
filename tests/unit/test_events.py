"""The core's event outbox (sfu/core/events.py): bounded, oldest dropped and counted."""

from sfu.core import events as ev


def test_outbox_keeps_order_and_empties_on_take():
    box = ev.EventOutbox()
    box.emit(ev.StreamStarted(1.0, "a"))
    box.emit(ev.ViewerJoined(2.0, "a", "v1"))
    assert [e.type for e in box.take()] == ["stream.started", "viewer.joined"]
    assert box.take() == [] and len(box) == 0


def test_outbox_is_bounded_and_counts_what_it_drops():
    box = ev.EventOutbox(limit=3)
    for i in range(5):
        box.emit(ev.ViewerLeft(float(i), "a", f"v{i}", "gone"))
    assert [e.session for e in box.take()] == ["v2", "v3", "v4"]
    assert box.dropped == 2
