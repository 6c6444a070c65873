"""The load viewer's receive path and the viewer's transport-cc feedback, without a server."""

from __future__ import annotations

import socket

from sfu.bench.loadviewer import RECV_BATCH, LoadViewer, Tally
from sfu.testing.viewer import PacketViewer
from sfu.wire import rtcp


def test_drain_reads_a_bounded_batch_per_wake_up() -> None:
    viewer = LoadViewer("http://127.0.0.1:9/whep/x", tally=Tally())
    seen: list[bytes] = []
    viewer._datagram = lambda index, data, addr: seen.append(data)  # type: ignore[method-assign]
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        queued = 2 * RECV_BATCH + 3
        for i in range(queued):
            tx.sendto(bytes([1, i]), rx.getsockname())
        rx.settimeout(2.0)  # wait for loopback delivery of the first one, then read non-blocking
        first = rx.recv(16, socket.MSG_PEEK)
        assert first == bytes([1, 0])
        rx.setblocking(False)
        viewer._drain(rx, 0)
        assert len(seen) == RECV_BATCH  # the rest waits for the next wake-up (level-triggered)
        viewer._drain(rx, 0)
        viewer._drain(rx, 0)
        assert [d[1] for d in seen] == list(range(queued))
        viewer._drain(rx, 0)  # empty: returns at once
        assert len(seen) == queued
    finally:
        rx.close()
        tx.close()


def test_twcc_feedback_reports_each_sequence_once_from_its_first_arrival() -> None:
    viewer = PacketViewer("http://127.0.0.1:9/whep/x")
    sent: list[bytes] = []
    viewer._send_rtcp = sent.append  # type: ignore[method-assign]
    viewer._twcc_reported = 9  # 9 and below went out in an earlier feedback
    viewer._twcc_arrivals = [(12, 3_000), (8, 500), (10, 1_000), (11, 2_000), (10, 9_000), (9, 800)]
    viewer._send_twcc()
    assert viewer._twcc_arrivals == [] and viewer._twcc_reported == 12
    (packet,) = [p for data in sent for p in rtcp.parse_compound(data)]
    assert isinstance(packet, rtcp.TransportCc)
    assert [seq for seq, received, _ in packet.packets] == [10, 11, 12]
    assert all(received for _, received, _ in packet.packets)
    deltas = [delta for _, _, delta in packet.packets[1:]]
    assert deltas == [1_000, 1_000]  # 10 at 1 ms (not its duplicate at 9 ms), 11 at 2 ms, 12 at 3 ms
    sent.clear()
    viewer._twcc_arrivals = [(12, 4_000), (7, 100)]  # nothing new
    viewer._send_twcc()
    assert sent == []
