"""The load viewer's C receive path (`_fastpath.LoadReceiver`) and the viewer's transport-cc
feedback, over real loopback sockets and SRTP, without a server."""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import time

from sfu._fastpath import LOAD_EVENT_GAP, LOAD_EVENT_LATE, LoadReceiver, SrtpContext, load_hist_bucket
from sfu.bench import hist
from sfu.bench.loadviewer import SO_TIMESTAMPNS
from sfu.testing import media
from sfu.testing.viewer import PacketViewer
from sfu.wire import rtcp

GCM = 7  # RFC 7714 profile id
KEY, SALT = os.urandom(16), os.urandom(12)
SSRC, RTX_SSRC, OTHER_SSRC = 0x1111, 0x2222, 0x3333
VP8_PT, RTX_PT, TWCC_ID = 96, 97, 3
PER_SOCKET = 8  # LRX_RECV


class Loop:
    """A registered receiving socket and a sender aimed at it."""

    def __init__(self, decrypt_every: int = 1) -> None:
        self.rx = LoadReceiver(decrypt_every)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.bind(("127.0.0.1", 0))
        self.slot = self.rx.add(self.sock.fileno())

    def send(self, data: bytes) -> None:
        self.tx.sendto(data, self.sock.getsockname())

    def drain_all(self, expected: int, deadline_s: float = 5.0) -> list[list]:
        """Drain until `expected` datagrams were read (handled or handed back); one list per call."""
        calls: list[list] = []
        done = 0
        deadline = time.monotonic() + deadline_s
        while done < expected:
            assert time.monotonic() < deadline, f"only {done} of {expected} datagrams read"
            select.select([self.rx.fileno()], [], [], 0.1)
            before = self.rx.packets
            back = self.rx.drain() or []
            calls.append(back)
            done += len(back) + (self.rx.packets - before) - sum(1 for b in back if is_rtp(b[1]))
        return calls

    def close(self) -> None:
        self.rx.remove(self.slot)
        self.sock.close()
        self.tx.close()


def is_rtp(data: bytes) -> bool:
    return len(data) >= 12 and 127 < data[0] < 192 and not 191 < data[1] < 224


def rtp(seq: int, *, ssrc: int = SSRC, pt: int = VP8_PT, twcc: int | None = None, payload: bytes = b"") -> bytes:
    """Plain RTP: one-byte extension block with transport-cc when given."""
    ext = b""
    b0 = 0x80
    if twcc is not None:
        element = bytes([(TWCC_ID << 4) | 1]) + struct.pack("!H", twcc) + b"\x00"  # padded to 4
        ext = struct.pack("!HH", 0xBEDE, 1) + element
        b0 |= 0x10
    return struct.pack("!BBHII", b0, pt, seq, seq * 3000, ssrc) + ext + payload


def vp8_payload(send_ns: int, frame: int) -> bytes:
    return b"\x10" + media.probe(send_ns, frame, 0) + b"\x55" * 40


def test_sockets_are_read_in_bounded_batches_and_the_rest_comes_back_in_order() -> None:
    loop = Loop()
    try:
        queued = 2 * PER_SOCKET + 3
        for i in range(queued):
            loop.send(bytes([1, i]))  # STUN-range first byte: never handled in C
        started = time.monotonic_ns()
        calls = loop.drain_all(queued)
        back = [item for call in calls for item in call]
        assert all(len(call) <= PER_SOCKET for call in calls)  # the rest waits for the next wake-up
        assert [data[1] for _, data, _, _ in back] == list(range(queued))
        assert {slot for slot, _, _, _ in back} == {loop.slot}
        assert {addr for _, _, addr, _ in back} == {loop.tx.getsockname()}
        for _, _, _, arrival_ns in back:  # kernel time, on CLOCK_MONOTONIC
            assert started - 1_000_000_000 < arrival_ns <= time.monotonic_ns()
        assert loop.rx.drain() is None  # empty: returns at once
        assert loop.rx.packets == 0
    finally:
        loop.close()


def test_rtp_of_bound_ssrcs_is_counted_sequenced_and_measured_in_c() -> None:
    loop = Loop(decrypt_every=2)
    srtp_tx = SrtpContext(GCM, KEY, SALT)
    try:
        connected = time.monotonic_ns()
        loop.rx.set_media(loop.slot, SrtpContext(GCM, KEY, SALT), TWCC_ID, {RTX_PT}, connected)
        # Python saw seq 100 (the SSRC's first packet) and bound the SSRC with that state
        assert loop.rx.bind(loop.slot, SSRC, 90000, 100, 100, 1, 100)
        assert loop.rx.bind(loop.slot, RTX_SSRC, 90000, 0, 0, media_ssrc=SSRC)
        now = time.monotonic_ns()
        sent = [
            rtp(101, twcc=1, payload=vp8_payload(now, 1)),
            rtp(102, twcc=2, payload=vp8_payload(now, 1)),
            rtp(104, twcc=3, payload=vp8_payload(connected - 10**9, 2)),  # 103 missing: a gap event;
            # its probe is from before the join (a cache replay): not a latency sample
            rtp(103, twcc=4, payload=vp8_payload(now, 1)),   # late: an event, not decrypted
            rtp(105, twcc=5, payload=vp8_payload(now, 2)),
            rtp(106, twcc=6, payload=vp8_payload(now, 3)),
            rtp(7, ssrc=RTX_SSRC, pt=RTX_PT, twcc=7, payload=struct.pack("!H", 99) + vp8_payload(now, 0)),
            rtp(8, ssrc=RTX_SSRC, pt=RTX_PT, twcc=8),        # padding-only RTX: a probe
            rtp(500, ssrc=OTHER_SSRC, twcc=9),               # not bound: handed back
        ]
        for packet in sent:
            loop.send(srtp_tx.protect(packet))
        calls = loop.drain_all(len(sent))
        back = [item for call in calls for item in call]
        assert [srtp_data[8:12] for _, srtp_data, _, _ in back] == [struct.pack("!I", OTHER_SSRC)]
        assert loop.rx.packets == len(sent)
        assert loop.rx.first_rtp_ns(loop.slot) > 0
        assert loop.rx.rtx_padding(loop.slot) == 1
        ((ssrc, base, highest, received, _nbytes, _jitter, rtx, frames),) = loop.rx.streams(loop.slot)
        assert (ssrc, base, highest) == (SSRC, 100, 106)
        assert received == 1 + 6 + 1  # Python's first one, six media, one retransmission
        assert rtx == 1
        events = loop.rx.take_events()
        assert events == [
            (LOAD_EVENT_GAP, loop.slot, SSRC, 102, 104),
            (LOAD_EVENT_LATE, loop.slot, SSRC, 103, 0),
            (LOAD_EVENT_LATE, loop.slot, SSRC, 99, 0),   # the retransmission's original number
        ]
        # one fresh media packet in two is decrypted: 101, 104 (a replay), 106
        assert loop.rx.decrypted == 3 and loop.rx.decrypt_failures == 0
        assert loop.rx.replayed == 1
        samples = loop.rx.take_hist()
        assert sum(samples.values()) == 2
        assert all(0 <= latency_us < 5_000_000 for latency_us in samples)
        assert frames == 2  # frames 1 (101) and 3 (106)
        # transport-wide arrivals, as the feedback reports them (the unbound SSRC's is Python's to record)
        (feedback,) = [p for data in loop.rx.twcc_feedback(loop.slot, 1, SSRC) for p in rtcp.parse_compound(data)]
        assert isinstance(feedback, rtcp.TransportCc)
        assert [(seq, received) for seq, received, _ in feedback.packets] == [(n, True) for n in range(1, 9)]
        first_us = feedback.reference_time * 64_000 + feedback.packets[0][2]
        wrap = 64_000 << 24
        # kernel arrival time on CLOCK_MONOTONIC, in 250 µs ticks: from just before `now` to 5 s after
        assert (first_us - now // 1000 + 1_000) % wrap < 5_001_000
        loop.rx.add_twcc(loop.slot, 9, first_us + 1_000)
        (feedback,) = [p for data in loop.rx.twcc_feedback(loop.slot, 1, SSRC) for p in rtcp.parse_compound(data)]
        assert [seq for seq, _, _ in feedback.packets] == [9] and feedback.fb_packet_count == 1
        assert loop.rx.twcc_overflow == 0
        # the unbound packet, once bound, is handled from Python's copy
        assert loop.rx.bind(loop.slot, OTHER_SSRC, 90000, 499, 499)
        assert loop.rx.process(loop.slot, back[0][1], back[0][3])
        assert [s[:4] for s in loop.rx.streams(loop.slot)][1] == (OTHER_SSRC, 499, 500, 1)
    finally:
        loop.close()


def test_a_tampered_packet_fails_decryption_and_is_counted() -> None:
    loop = Loop()
    try:
        loop.rx.set_media(loop.slot, SrtpContext(GCM, KEY, SALT), 0, (), time.monotonic_ns())
        loop.rx.bind(loop.slot, SSRC, 90000, 1, 1)
        protected = bytearray(SrtpContext(GCM, KEY, SALT).protect(rtp(2, payload=vp8_payload(0, 0))))
        protected[-1] ^= 1
        loop.send(bytes(protected))
        loop.drain_all(1)
        assert loop.rx.decrypt_failures == 1 and loop.rx.decrypted == 0
    finally:
        loop.close()


def test_slots_are_reused_and_unknown_slots_refused() -> None:
    rx = LoadReceiver()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
    try:
        slots = [rx.add(s.fileno()) for s in socks[:18]]
        assert sorted(slots) == list(range(18))
        rx.remove(slots[3])
        assert rx.add(socks[18].fileno()) == 3
        try:
            rx.remove(99)
        except ValueError:
            pass
        else:
            raise AssertionError("an unknown slot was accepted")
    finally:
        for s in socks:
            s.close()


def test_histogram_buckets_are_the_bench_histograms() -> None:
    values = list(range(0, 2100)) + [10**k + d for k in range(3, 11) for d in (-1, 0, 1, 7, 999, 12345)]
    for us in values:
        if us >= 0:
            assert load_hist_bucket(us) == hist.bucket(us), us
    assert load_hist_bucket(-5) == 0


def test_twcc_feedback_reports_each_sequence_once_from_its_first_arrival() -> None:
    viewer = PacketViewer("http://127.0.0.1:9/whep/x")
    sent: list[bytes] = []
    viewer._send_rtcp = sent.append  # type: ignore[method-assign]
    viewer._twcc_feedback.reported = 9  # 9 and below went out in an earlier feedback
    viewer._twcc_arrivals = [(12, 3_000), (8, 500), (10, 1_000), (11, 2_000), (10, 9_000), (9, 800)]
    viewer._send_twcc()
    assert viewer._twcc_arrivals == [] and viewer._twcc_feedback.reported == 12
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



def test_c_transport_cc_feedback_is_the_viewers_byte_for_byte() -> None:
    """Random arrival records (losses, reordering, duplicates, wraps, long gaps, arrivals far apart
    or out of order, small size limits) through `LoadReceiver.twcc_feedback` and through
    `PacketViewer`'s feedback (`FeedbackBuilder` + `rtcp.serialize`): the same datagrams, call
    after call."""
    rng = random.Random(7)
    for trial in range(40):
        rx = LoadReceiver()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            slot = rx.add(sock.fileno())
            viewer = PacketViewer("http://127.0.0.1:9/whep/x")
            python_out: list[bytes] = []
            viewer._send_rtcp = python_out.append  # type: ignore[method-assign]
            max_size = rng.choice([1200, 1200, 200, 60])
            viewer._twcc_feedback.max_size = max_size
            seq = rng.randrange(0x10000)
            t_us = rng.randrange(1, 10**12)
            for call in range(rng.randrange(1, 6)):
                for _ in range(rng.randrange(0, 300)):
                    r = rng.random()
                    if r < 0.1:
                        seq += rng.randrange(2, 40)  # a loss
                    elif r < 0.13:
                        seq -= rng.randrange(1, 5)  # reordered, or a duplicate
                    elif r < 0.14:
                        seq += rng.randrange(1000, 30000)  # a long gap
                    else:
                        seq += 1
                    r = rng.random()
                    if r < 0.05:
                        t_us += rng.randrange(8_000_000, 20_000_000)  # past a 16-bit delta
                    elif r < 0.1:
                        t_us -= rng.randrange(0, 50_000)  # "before" the previous arrival
                    else:
                        t_us += rng.randrange(0, 70_000)
                    rx.add_twcc(slot, seq & 0xFFFF, t_us)
                    viewer._record_twcc(seq & 0xFFFF, t_us)
                python_out.clear()
                viewer._send_twcc()
                assert rx.twcc_feedback(slot, viewer.ssrc, 0, max_size) == python_out, (trial, call)
        finally:
            sock.close()
