"""Transport-cc feedback from arrival records: the shared builder (sfu.wire.twcc_feedback) and the
server's sender towards a publisher (sfu.core.twcc.FeedbackSender)."""

from __future__ import annotations

from sfu.core.twcc import MAX_PENDING, FeedbackSender
from sfu.wire import rtcp
from sfu.wire.twcc_feedback import FeedbackBuilder


def _statuses(packets: list[rtcp.TransportCc]) -> list[tuple[int, bool]]:
    return [(seq, received) for packet in packets for seq, received, _ in packet.packets]


def test_builder_reports_each_number_once_in_order_from_its_first_arrival():
    builder = FeedbackBuilder(sender_ssrc=1)
    arrivals = [(5, 5_000), (3, 3_000), (3, 9_000), (6, 6_000)]
    (packet,) = builder.build(2, arrivals)
    assert (packet.sender_ssrc, packet.media_ssrc, packet.fb_packet_count) == (1, 2, 0)
    assert _statuses([packet]) == [(3, True), (4, False), (5, True), (6, True)]
    assert [delta for _, _, delta in packet.packets if delta is not None][1:] == [2_000, 1_000]
    assert (builder.reported, builder.fb_count, builder.packets_sent) == (6, 1, 1)


def test_builder_drops_what_an_earlier_feedback_reported():
    builder = FeedbackBuilder(sender_ssrc=1)
    builder.build(2, [(10, 1_000)])
    assert builder.build(2, [(9, 2_000), (10, 2_500)]) == []  # late: 9 went out as lost
    assert (builder.reported, builder.fb_count, builder.packets_sent) == (10, 1, 1)
    (packet,) = builder.build(2, [(10, 3_000), (11, 3_500)])
    assert _statuses([packet]) == [(11, True)] and packet.fb_packet_count == 1


def test_builder_starting_point_and_packet_count_wrap():
    builder = FeedbackBuilder(sender_ssrc=1, reported=-1)  # the test viewer's "nothing yet"
    assert builder.build(2, [(-3, 100)]) == []
    builder.fb_count = 255
    first, *_ = builder.build(2, [(0, 200)])
    assert first.fb_packet_count == 255 and builder.fb_count == 0


def test_sender_unwraps_and_drops_late_arrivals():
    sender = FeedbackSender(sender_ssrc=1)
    sender.add([(65534, 1_000), (65535, 2_000), (0, 3_000)])  # wraps: 65536
    packets = sender.build(media_ssrc=2)
    assert _statuses(packets) == [(65534, True), (65535, True), (0, True)]
    assert sender.reported == 65536 and sender.highest == 65536 and sender.packets_sent == 1
    sender.add([(65535, 4_000), (1, 5_000), (1, 6_000)])  # 65535 again: already reported
    assert sender.pending == {65537: 5_000}
    assert sender.build(media_ssrc=2)[0].fb_packet_count == 1
    assert sender.build(media_ssrc=2) == []


def test_sender_keeps_at_most_max_pending_arrivals():
    sender = FeedbackSender(sender_ssrc=1)
    sender.add([(seq & 0xFFFF, seq) for seq in range(MAX_PENDING + 10)])
    assert len(sender.pending) == MAX_PENDING
    assert max(sender.pending) == MAX_PENDING - 1
