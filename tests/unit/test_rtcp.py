import random

import pytest
from aiortc import rtp as artp

from sfu.wire import rtcp
from sfu.wire.rtcp import (
    App,
    Bye,
    Dlrr,
    ExtendedReport,
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    Rrtr,
    Sdes,
    SenderReport,
    TransportCc,
    UnknownRtcp,
    XrBlock,
)

BLOCK = ReportBlock(
    ssrc=0x11223344, fraction_lost=12, packets_lost=-5, highest_sequence=70000,
    jitter=33, lsr=0xAABBCCDD, dlsr=65536,
)
A_BLOCK = artp.RtcpReceiverInfo(
    ssrc=0x11223344, fraction_lost=12, packets_lost=-5, highest_sequence=70000,
    jitter=33, lsr=0xAABBCCDD, dlsr=65536,
)


def roundtrip(packet):
    data = rtcp.serialize([packet])
    assert len(data) % 4 == 0
    (parsed,) = rtcp.parse_compound(data)
    assert parsed == packet
    return data


# --- against aiortc's serializer ---------------------------------------------------------


def test_sr_rr_match_aiortc():
    sr = SenderReport(1, 0x0102030405060708, 90000, 10, 1000, [BLOCK])
    a_sr = artp.RtcpSrPacket(
        ssrc=1,
        sender_info=artp.RtcpSenderInfo(
            ntp_timestamp=0x0102030405060708, rtp_timestamp=90000, packet_count=10,
            octet_count=1000,
        ),
        reports=[A_BLOCK],
    )
    assert roundtrip(sr) == bytes(a_sr)
    rr = ReceiverReport(2, [BLOCK, BLOCK])
    assert roundtrip(rr) == bytes(artp.RtcpRrPacket(ssrc=2, reports=[A_BLOCK, A_BLOCK]))
    assert roundtrip(ReceiverReport(3, [])) == bytes(artp.RtcpRrPacket(ssrc=3))


def test_sdes_bye_match_aiortc():
    # Byte equality does not hold: aiortc always writes two null octets and does not pad
    # each chunk to 32 bits (wrong with several chunks). Check that each side parses the
    # other's bytes instead.
    sdes = Sdes([(5, [(1, b"cname-of-five")]), (6, [(1, b"x"), (2, b"name")])])
    roundtrip(sdes)
    a_single = artp.RtcpSdesPacket(chunks=[artp.RtcpSourceInfo(ssrc=5, items=[(1, b"cname")])])
    assert rtcp.parse_compound(bytes(a_single)) == [Sdes([(5, [(1, b"cname")])])]
    # (aiortc's parser also mis-reads a chunk ended by a single null octet when another
    # chunk follows, so only one chunk here)
    (a_parsed,) = artp.RtcpPacket.parse(rtcp.serialize([Sdes([(5, [(1, b"cname")])])]))
    assert [(c.ssrc, c.items) for c in a_parsed.chunks] == [(5, [(1, b"cname")])]
    assert roundtrip(Bye([7, 8])) == bytes(artp.RtcpByePacket(sources=[7, 8]))
    roundtrip(Bye([7], b"shutting down"))


def test_pli_remb_nack_match_aiortc():
    assert roundtrip(Pli(1, 2)) == bytes(artp.RtcpPsfbPacket(fmt=1, ssrc=1, media_ssrc=2))
    for bitrate in (0, 1000, 262143, 1_500_000, 123_456_789):
        remb = Remb(9, bitrate, [10, 11])
        a = artp.RtcpPsfbPacket(fmt=15, ssrc=9, media_ssrc=0, fci=artp.pack_remb_fci(bitrate, [10, 11]))
        data = rtcp.serialize([remb])
        assert data == bytes(a)
        (parsed,) = rtcp.parse_compound(data)
        assert parsed.ssrcs == [10, 11]
        assert parsed.bitrate == artp.unpack_remb_fci(a.fci)[0]
        assert parsed.bitrate <= bitrate and parsed.bitrate >= bitrate * (1 - 2**-17)
    lost = [100, 101, 105, 116, 117, 140, 141, 160]
    nack = Nack(1, 2, lost)
    a_nack = artp.RtcpRtpfbPacket(fmt=1, ssrc=1, media_ssrc=2, lost=lost)
    assert roundtrip(nack) == bytes(a_nack)
    # and aiortc parses ours
    (a_parsed,) = artp.RtcpPacket.parse(rtcp.serialize([nack]))
    assert a_parsed.lost == lost


def test_compound_matches_aiortc_parse():
    data = rtcp.serialize(
        [SenderReport(1, 2, 3, 4, 5, []), Sdes([(1, [(1, b"abc")])]), Pli(1, 2)]
    )
    a_packets = artp.RtcpPacket.parse(data)
    assert [type(p).__name__ for p in a_packets] == ["RtcpSrPacket", "RtcpSdesPacket", "RtcpPsfbPacket"]
    assert [type(p) for p in rtcp.parse_compound(data)] == [SenderReport, Sdes, Pli]


# --- NACK across wrap --------------------------------------------------------------------


def test_nack_across_wrap():
    lost = [65533, 65535, 0, 1, 20]
    data = roundtrip(Nack(1, 2, lost))
    assert len(data) == 12 + 4 * 2  # PID 65533 covers up to 13; 20 needs a second pair
    assert rtcp.nack_pairs(lost) == [(65533, 0b1110), (20, 0)]
    # unordered input still packs along the circular order
    assert rtcp.nack_pairs([1, 65535, 0]) == [(65535, 0b11)]
    assert rtcp.nack_pairs([]) == []


def test_nack_wide_range():
    lost = list(range(65500, 65536)) + list(range(0, 40, 3))
    (parsed,) = rtcp.parse_compound(rtcp.serialize([Nack(1, 2, lost)]))
    assert parsed.lost == lost


# --- FIR, XR, APP, unknown ---------------------------------------------------------------


def test_fir_xr_app_unknown_roundtrip():
    roundtrip(Fir(1, [(2, 7), (3, 255)]))
    roundtrip(ExtendedReport(4, [Rrtr(rtcp.ntp_from_unix(1_700_000_000.5))]))
    roundtrip(ExtendedReport(4, [Dlrr([(5, 0x12345678, 6553), (6, 1, 2)]), XrBlock(42, 1, b"abcd")]))
    roundtrip(App(3, 8, b"TEST", b"12345678"))
    roundtrip(UnknownRtcp(210, 3, b"\x01\x02\x03\x04"))
    # PSFB AFB without the REMB identifier stays unknown
    roundtrip(UnknownRtcp(206, 15, b"\0" * 8 + b"ABCD"))


def test_fir_bytes():
    data = rtcp.serialize([Fir(0x01020304, [(0x0A0B0C0D, 9)])])
    assert data == bytes.fromhex("84ce0004" "01020304" "00000000" "0a0b0c0d" "09000000")


def test_malformed():
    with pytest.raises(rtcp.RtcpError):
        rtcp.parse_compound(b"")
    with pytest.raises(rtcp.RtcpError):
        rtcp.parse_compound(b"\x40\xc8\x00\x00")  # version 1
    with pytest.raises(rtcp.RtcpError):
        rtcp.parse_compound(b"\x80\xc8\x00\x06" + b"\0" * 8)  # length beyond data
    with pytest.raises(rtcp.RtcpError):
        rtcp.parse_compound(b"\x81\xc8\x00\x01" + b"\0" * 4)  # SR too short
    with pytest.raises(rtcp.RtcpError):
        rtcp.parse_compound(b"\xa0\xc9\x00\x01" + b"\0" * 4)  # padding count 0
    good = rtcp.serialize([SenderReport(1, 2, 3, 4, 5, [BLOCK]), Sdes([(1, [(1, b"abc")])])])
    rng = random.Random(1)
    for _ in range(2000):  # never anything but RtcpError
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            rtcp.parse_compound(bytes(data[: rng.randint(0, len(data))]))
        except rtcp.RtcpError:
            pass


def test_helpers():
    ntp = rtcp.ntp_from_unix(0.0)
    assert ntp == rtcp.NTP_EPOCH_OFFSET_S << 32
    assert rtcp.ntp_from_unix(1.5) - ntp == 3 << 31
    sent = rtcp.ntp_from_unix(1000.0)
    lsr = rtcp.ntp_middle_32(sent)
    now = rtcp.ntp_middle_32(rtcp.ntp_from_unix(1000.0 + 0.25))
    dlsr = int(0.05 * 65536)
    assert rtcp.rtt_from_report(now, lsr, dlsr) == pytest.approx(0.2, abs=1e-4)
    assert rtcp.rtt_from_report(now, 0, 0) is None
    assert rtcp.rtt_from_report(lsr, lsr, 100) is None  # negative


# --- transport-wide congestion control ---------------------------------------------------

# Captured from Chrome (libwebrtc), annotated by Wireshark: one run-length chunk of 9
# small deltas, RTCP padding with the count in the last octet.
LIBWEBRTC_TWCC = bytes.fromhex(
    "afcd0007" "00000001" "dd586eb6" "00010009" "5e911000" "2009" "1c0c2c38000400081801"
)
# pion/rtcp unmarshal vector: 2-bit vector (small deltas, a loss, a large delta), then a
# run-length chunk of 48 losses of which only 2 are counted.
PION_TWCC_MIXED = bytes.fromhex(
    "afcd0007" "9b74f61f" "9371dcbc" "853c0009" "63f916b3" "d5520030" "9baa6aaa7b010901"
)
# pion/rtcp marshal vectors. pion sets the P bit on the first one although it has no
# padding (last octet 0), which libwebrtc rejects as we do: the bit is cleared here.
PION_TWCC_LARGE = bytes.fromhex(
    "8fcd0007" "fa17fa17" "193dd8bb" "01740006" "45b15a40" "40022004" "1ffe1f9a" "d000d000"
)
PION_TWCC_ONE_BIT = bytes.fromhex(
    "afcd0007" "fa17fa17" "43032fa0" "9c14000c" "75842000" "bec0c13f" "3b3f5390" "3b000003"
)


def test_twcc_libwebrtc_vector():
    (fb,) = rtcp.parse_compound(LIBWEBRTC_TWCC)
    assert isinstance(fb, TransportCc)
    assert (fb.sender_ssrc, fb.media_ssrc) == (1, 0xDD586EB6)
    assert (fb.base_sequence, fb.reference_time, fb.fb_packet_count) == (1, 6197520, 0)
    assert [p[0] for p in fb.packets] == list(range(1, 10))
    assert [p[2] for p in fb.packets] == [
        7000, 3000, 11000, 14000, 0, 1000, 0, 2000, 6000
    ]
    assert rtcp.serialize([fb]) == LIBWEBRTC_TWCC


def test_twcc_pion_mixed_vector():
    (fb,) = rtcp.parse_compound(PION_TWCC_MIXED)
    assert (fb.base_sequence, fb.reference_time, fb.fb_packet_count) == (34108, 6551830, 179)
    assert fb.packets == [
        (34108, True, 38750),
        (34109, True, 42500),
        (34110, True, 26500),
        (34111, True, 42500),
        (34112, True, 30750),
        (34113, False, None),
        (34114, True, 66250),
        (34115, False, None),
        (34116, False, None),
    ]
    # our encoder makes its own (valid) chunk choice; the values survive
    (again,) = rtcp.parse_compound(rtcp.serialize([fb]))
    assert again == fb


def test_twcc_pion_marshal_vectors():
    (fb,) = rtcp.parse_compound(PION_TWCC_LARGE)
    assert [p[2] for p in fb.packets] == [2047500, 2022500, 52000, 0, 52000, 0]
    # pion writes two run-length chunks (2 large, 4 small); we write one 2-bit vector
    # (same size after padding)
    data = rtcp.serialize([fb])
    assert int.from_bytes(data[20:22], "big") == 0b11_10_10_01_01_01_01_00
    assert rtcp.parse_compound(data) == [fb]
    (fb,) = rtcp.parse_compound(PION_TWCC_ONE_BIT)
    assert [p[1] for p in fb.packets] == [True] * 5 + [False] + [True] * 2 + [False] * 4
    assert [p[2] for p in fb.packets if p[1]] == [48250, 15750, 14750, 15750, 20750, 36000, 14750]
    assert rtcp.serialize([fb]) == PION_TWCC_ONE_BIT  # one 1-bit status vector chunk


def test_twcc_negative_delta_and_wrap():
    fb = TransportCc(1, 2, 65534, 0xFFFFFF, 255, [
        (65534, True, 1000), (65535, True, -250), (0, False, None), (1, True, 64000),
    ])
    data = roundtrip(fb)
    chunk = int.from_bytes(data[20:22], "big")
    assert chunk >> 14 == 0b11  # a 2-bit vector because of the large/negative deltas


def test_twcc_long_run_uses_run_length():
    packets = [(i, True, 250) for i in range(100)] + [(100 + i, False, None) for i in range(5000)]
    packets.append((5100, True, 500))
    fb = TransportCc(1, 2, 0, 10, 1, packets)
    data = roundtrip(fb)
    # 3 chunks: run of 100 small, run of 5000 lost, final run of 1
    assert len(data) == 20 + 6 + 101 + 1


def random_arrivals(rng, n, start_seq=65000, loss=0.1):
    t = 5_000_000_000
    arrivals = []
    for i in range(n):
        t += rng.choice([0, 250, 1000, 5000, 70_000, 300_000])
        if rng.random() < loss:
            arrivals.append((start_seq + i, None))
        else:
            arrivals.append((start_seq + i, t + rng.randrange(-2000, 2000)))
    return arrivals


def reconstruct(feedbacks):
    """Absolute arrival times in 250 µs ticks, keyed by 16-bit sequence number."""
    out = {}
    for fb in feedbacks:
        t = fb.reference_time * 64000
        for seq, received, delta in fb.packets:
            if received:
                t += delta
                out[seq] = t
            else:
                out.setdefault(seq, None)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_twcc_builder_roundtrip(seed):
    rng = random.Random(seed)
    arrivals = random_arrivals(rng, 3000)
    while arrivals[0][1] is None:
        arrivals.pop(0)
    feedbacks = rtcp.build_transport_cc(1, 2, arrivals, fb_packet_count=250, max_size=400)
    assert len(feedbacks) > 1
    assert [fb.fb_packet_count for fb in feedbacks] == [
        (250 + i) % 256 for i in range(len(feedbacks))
    ]
    parsed = []
    for fb in feedbacks:
        data = rtcp.serialize([fb])
        assert len(data) <= 400
        (p,) = rtcp.parse_compound(data)
        assert p == fb
        parsed.append(p)
    got = reconstruct(parsed)
    for seq, arrival in arrivals:
        if arrival is None:
            assert got[seq & 0xFFFF] is None
        else:
            # exact to the 250 µs tick, no accumulated drift
            assert got[seq & 0xFFFF] == (arrival // 250) * 250


def test_twcc_builder_splits_on_huge_gap():
    arrivals = [(10, 1_000_000), (11, 1_001_000), (12, 20_000_000), (13, 20_000_500)]
    feedbacks = rtcp.build_transport_cc(1, 2, arrivals, fb_packet_count=0)
    assert [fb.base_sequence for fb in feedbacks] == [10, 12]  # 19 s does not fit 16 bits
    assert [len(fb.packets) for fb in feedbacks] == [2, 2]
    assert rtcp.build_transport_cc(1, 2, [], 0) == []
    # gaps in the input are reported as lost
    (fb,) = rtcp.build_transport_cc(1, 2, [(5, 64000), (8, 65000)], 0)
    assert fb.packets == [(5, True, 0), (6, False, None), (7, False, None), (8, True, 1000)]
