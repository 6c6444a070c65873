"""Loss repair on a fake clock through a seeded network emulator (no sockets, no sleeps).

The fast path is the real one (a capture-mode Router: received bitmap, retransmission ring, RTX,
SRTP); the policies are the real Python objects (`Retransmitter`, `NackGenerator`, the session
manager's keyframe requests). The remote ends are small models of a browser's receiver (NACK at
once on a gap, again about once per RTT) and of a publisher that resends what is NACKed.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from harness import CLOCK, Forwarder, parse, rtp, vp8_payload
from netem import Link
from sfu import Config, _fastpath
from sfu.core import keyframes
from sfu.core.nack import NackGenerator
from sfu.core.retransmit import Retransmitter
from sfu.core.sessions import SessionManager
from sfu.core.stream import Layer, Stream
from sfu.wire import rtcp

STEP = 0.001  # fake clock resolution
PACKET_INTERVAL = 0.01  # 100 packets/s: ~0.8 Mbit/s of 1 kB packets
PACKETS_PER_FRAME = 3


def media_packet(i: int, ssrc: int = 0x1111, keyframe_every: int = 300) -> bytes:
    frame = i // PACKETS_PER_FRAME
    start = i % PACKETS_PER_FRAME == 0
    key = start and frame % (keyframe_every // PACKETS_PER_FRAME) == 0
    return rtp(20000 + i, frame * 3000, ssrc, vp8_payload(key, start), marker=i % PACKETS_PER_FRAME == 2)


class BrowserLikeReceiver:
    """NACKs a gap as soon as it sees it (libwebrtc sends at once), then about once per RTT."""

    def __init__(self, rx: _fastpath.SrtpContext, rtt: float, rtx_ssrc: int | None = None) -> None:
        self.rx = rx
        self.rtt = rtt
        self.rtx_ssrc = rtx_ssrc
        self.highest = -1
        self.missing: dict[int, list[float]] = {}  # seq -> [due, tries]
        self.received: set[int] = set()
        self.lost_at: dict[int, float] = {}  # seq -> when its gap was seen
        self.recovered_after: dict[int, float] = {}
        self.tries: dict[int, int] = {}
        self.rtx_packets = 0

    def receive(self, datagram: bytes, now: float) -> None:
        packet = self.rx.unprotect(datagram)
        pt, seq, _ts, ssrc = parse(packet)
        if self.rtx_ssrc is not None and ssrc == self.rtx_ssrc:
            self.rtx_packets += 1
            seq = int.from_bytes(packet[12:14], "big")  # RFC 4588 OSN
        assert seq not in self.received, "a packet arrived twice"
        self.received.add(seq)
        if self.highest >= 0 and seq > self.highest + 1:
            for lost in range(self.highest + 1, seq):
                self.missing[lost] = [now, 0]
                self.lost_at[lost] = now
        if seq in self.missing:
            del self.missing[seq]
            self.recovered_after[seq] = now - self.lost_at[seq]
        self.highest = max(self.highest, seq)

    def due_nacks(self, now: float) -> list[int]:
        due = []
        for seq, entry in self.missing.items():
            if entry[0] <= now:
                entry[0] = now + self.rtt * 1.1
                entry[1] += 1
                self.tries[seq] = entry[1]
                due.append(seq)
        return due


@pytest.mark.parametrize("rtx", [False, True], ids=["same-ssrc", "rtx"])
def test_viewer_leg_5_percent_loss_every_packet_recovered_within_two_round_trips(rtx):
    one_way, jitter = 0.025, 0.002
    rtt = 2 * one_way
    fwd = Forwarder()
    out, rx = fwd.add_viewer(0xAAAA, nack=True)
    policy = Retransmitter(out, 0xBBBB if rtx else None, 97 if rtx else None)
    policy.on_report(rtt, 0.0)
    down = Link(delay=one_way, jitter=jitter, loss=0.05, seed=11)  # media and retransmissions
    up = Link(delay=one_way, jitter=jitter, seed=12)  # NACKs
    viewer = BrowserLikeReceiver(rx, rtt, 0xBBBB if rtx else None)
    total = 1000
    now, sent = 0.0, 0
    end = total * PACKET_INTERVAL + 1.0
    while now < end:
        if sent < total and now >= sent * PACKET_INTERVAL:
            fwd.inject(media_packet(sent), now)
            sent += 1
        for datagram in fwd.take():
            down.send(now, datagram)
        for datagram in down.receive(now):
            viewer.receive(datagram, now)
        seqs = viewer.due_nacks(now)
        if seqs:
            up.send(now, seqs)
        for nack in up.receive(now):
            policy.on_nack(fwd.router, nack, now)
        now = round(now + STEP, 6)
    counts = out.retransmissions
    print(f"\nviewer leg ({'rtx' if rtx else 'same ssrc'}): {down.lost} of {down.sent} datagrams lost; "
          f"{len(viewer.recovered_after)} recovered, worst {max(viewer.recovered_after.values()) * 1000:.0f} ms "
          f"(RTT {rtt * 1000:.0f} ms); ring: {counts}")
    assert down.lost >= 40
    assert len(viewer.received) == total, "every packet arrives in the end"
    assert not viewer.missing
    # the gap is seen one packet interval late at most; each round of repair costs one RTT
    margin = PACKET_INTERVAL + 2 * jitter + 2 * STEP
    assert max(viewer.tries.values()) <= 2
    assert all(after <= 2 * rtt + margin for after in viewer.recovered_after.values())
    assert counts["sent"] == len(viewer.recovered_after) + (down.lost - len(viewer.lost_at))
    assert counts["missing"] == 0 and counts["rate-limited"] == 0
    if rtx:
        assert viewer.rtx_packets == len(viewer.recovered_after)


def test_publisher_leg_5_percent_loss_recovered_by_server_nacks_each_packet_forwarded_once():
    one_way = 0.025
    fwd = Forwarder()
    out, rx = fwd.add_viewer(0xAAAA, nack=False)
    generator = NackGenerator()
    generator.set_rtt(2 * one_way)
    up = Link(delay=one_way, jitter=0.003, loss=0.05, duplicate=0.02, reorder=0.02, seed=21)
    back = Link(delay=one_way, seed=22)
    history: dict[int, bytes] = {}
    delivered: dict[int, int] = {}
    total = 1000
    fwd.inject(media_packet(0), 0.0)  # the first keyframe packet arrives (the viewer's gate opens)
    history[20000] = media_packet(0)
    now, sent, resent = 0.0, 1, 0
    end = total * PACKET_INTERVAL + 1.5
    while now < end:
        if sent < total and now >= sent * PACKET_INTERVAL:
            packet = media_packet(sent)
            history[20000 + sent] = packet
            up.send(now, packet)
            sent += 1
        for packet in up.receive(now):
            fwd.inject(packet, now)
        for stream in fwd.router.take_loss_events():
            gaps, overflowed = stream.take_gaps()
            generator.on_gaps(gaps, overflowed, now, stream.last_keyframe_seq)
        deadline = generator.next_deadline()
        if deadline is not None and deadline <= now:
            seqs = generator.poll(now, fwd.stream.missing)
            if seqs:
                back.send(now, [s & 0xFFFF for s in seqs])
        for nack in back.receive(now):
            for seq in nack:  # the publisher resends the same packet (as OBS does)
                resent += 1
                up.send(now, history[seq])
        for datagram in fwd.take():
            _, seq, _, _ = parse(rx.unprotect(datagram))
            delivered[seq] = delivered.get(seq, 0) + 1
        now = round(now + STEP, 6)
    repair = fwd.stream.repair_counts
    print(f"\npublisher leg: {up.lost} of {up.sent} lost, {up.duplicated} duplicated; {generator.nacks_sent} NACKs "
          f"for {generator.seqs_requested} packets, {resent} resent; fast path: {repair}")
    assert up.lost >= 40
    assert len(delivered) == total, "the viewer sees no final loss"
    assert set(delivered.values()) == {1}, "each packet forwarded exactly once"
    assert repair["duplicates"] >= up.duplicated  # network duplicates (and any double repair) dropped
    assert generator.given_up == 0 and not generator.pending


class _Out:
    def __init__(self) -> None:
        self.need_keyframe = False
        self.keyframe_wanted = False


def test_pli_storm_from_100_viewers_is_one_upstream_request_per_interval():
    router = _fastpath.Router(-1, socket.AF_INET)
    clock = SimpleNamespace(now=0.0)
    manager = SessionManager(Config.for_tests(), router, [], 0, None, lambda: clock.now, lambda: 1e9 + clock.now)
    stream = Stream("storm")
    instream = _fastpath.InStream(None, 0x1111, _fastpath.CODEC_VP8, 96, CLOCK)
    layer = Layer(None, 0x1111, instream)
    codec = SimpleNamespace(name="VP8", rtcp_fb=("nack", "nack pli"))
    stream.tracks = [SimpleNamespace(layers=[layer], spec=SimpleNamespace(codec=codec), kind="video")]
    publisher = SimpleNamespace(closed=False, stream=stream, rtcp_ssrc=1, peer=SimpleNamespace(path=None, srtp_profile=None))
    stream.publisher = publisher
    manager.streams["storm"] = stream
    viewers = []
    for i in range(100):
        sub = SimpleNamespace(spec=SimpleNamespace(ssrc=1000 + i), layer=layer, out=_Out())
        viewers.append(SimpleNamespace(subscriptions=[sub], stream=stream, kind="whep"))
    sent_times: list[float] = []
    real_send = manager._send_keyframe_request
    manager._send_keyframe_request = lambda pub, lay: (sent_times.append(clock.now), real_send(pub, lay))
    keyframe_due = None
    while clock.now < 10.0:
        now = clock.now
        for i, viewer in enumerate(viewers):  # every viewer PLIs every 20 ms, out of phase
            if int(now * 1000) % 20 == i % 20:
                manager.rtcp.from_viewer(viewer, rtcp.Pli(5000 + i, 1000 + i), now)
        if sent_times and keyframe_due is None and sent_times[-1] == now:
            keyframe_due = now + 0.05  # the publisher answers each PLI with a keyframe 50 ms later
        if keyframe_due is not None and now >= keyframe_due:
            instream.keyframes += 1
            instream.last_keyframe_at = now
            keyframe_due = None
        if manager.next_deadline() <= now:
            manager.handle_timer(now)
        clock.now = round(now + STEP, 6)
    received = manager.counters["keyframe-requests-received"]
    print(f"\nPLI storm: {received} PLIs from 100 viewers in 10 s -> {len(sent_times)} upstream requests, "
          f"{layer.keyframes.suppressed} merged")
    assert received > 40_000
    gaps = [b - a for a, b in zip(sent_times, sent_times[1:], strict=False)]
    assert len(sent_times) <= 10.0 / keyframes.MIN_INTERVAL_S + 1
    assert min(gaps) >= keyframes.MIN_INTERVAL_S - 1e-9
    assert manager.repair_totals()["keyframe_requests_suppressed"] == layer.keyframes.suppressed > 40_000
