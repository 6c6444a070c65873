"""SRTP/SRTCP on libcrypto (sfu/_srtp.pxi): RFC vectors, libsrtp interop, error paths."""

import hashlib
import hmac
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pylibsrtp import Policy, Session

from sfu._fastpath import (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AES128_CM_SHA1_80,
    SRTP_ERR_AUTH,
    SRTP_ERR_CAPACITY,
    SRTP_ERR_REPLAY,
    SRTP_ERR_SHORT,
    SRTP_REPLAY_WINDOW,
    SrtpContext,
    SrtpError,
    srtp_key_lengths,
    srtp_overhead,
)

CM = SRTP_AES128_CM_SHA1_80
GCM = SRTP_AEAD_AES_128_GCM
PROFILES = [CM, GCM]
LIBSRTP_PROFILE = {
    CM: Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    GCM: Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}
# pylibsrtp copies through a 1500-byte buffer and reserves 144 bytes of trailer on protect
LIBSRTP_MAX_PROTECT_INPUT = 1356

h = bytes.fromhex


def rtp(seq, ssrc=0x11223344, payload=b"", csrcs=(), ext=None, pt=96, ts=0xABCDEF01, marker=0):
    """An RTP packet (RFC 3550 §5.1); `ext` is (profile, bytes of a multiple of 4) or None."""
    first = 0x80 | (0x10 if ext is not None else 0) | len(csrcs)
    out = struct.pack("!BBHII", first, (marker << 7) | pt, seq & 0xFFFF, ts, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext is not None:
        profile, body = ext
        assert len(body) % 4 == 0
        out += struct.pack("!HH", profile, len(body) // 4) + body
    return out + payload


def rtcp_sr(ssrc=0x11223344, extra=b""):
    """A sender report with no report blocks (RFC 3550 §6.4.1), plus optional extra bytes."""
    body = struct.pack("!IIIII", ssrc, 0x83AA7E80, 0x10000000, 1234, 10) + struct.pack("!I", 1000)
    body += extra
    return struct.pack("!BBH", 0x80, 200, len(body) // 4) + body


def keys(profile, seed=1):
    rng = random.Random(seed)
    key_len, salt_len = srtp_key_lengths(profile)
    return rng.randbytes(key_len), rng.randbytes(salt_len)


def pair(profile, seed=1):
    """(our sender, our receiver, libsrtp sender, libsrtp receiver) on the same master key."""
    key, salt = keys(profile, seed)
    lib = LIBSRTP_PROFILE[profile]
    return (
        SrtpContext(profile, key, salt),
        SrtpContext(profile, key, salt),
        Session(Policy(key=key + salt, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=lib)),
        Session(Policy(key=key + salt, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=lib)),
    )


def code_of(excinfo):
    return excinfo.value.code


# ---- surface ------------------------------------------------------------------------------


def test_constants_and_sizes():
    assert (CM, GCM) == (0x0001, 0x0007)
    assert (SRTP_ERR_SHORT, SRTP_ERR_AUTH, SRTP_ERR_REPLAY, SRTP_ERR_CAPACITY) == (-1, -2, -3, -4)
    assert srtp_overhead(CM) == 10 and srtp_overhead(GCM) == 16
    assert srtp_key_lengths(CM) == (16, 14) and srtp_key_lengths(GCM) == (16, 12)
    with pytest.raises(ValueError):
        srtp_overhead(0x0002)
    with pytest.raises(ValueError):
        srtp_key_lengths(0x0008)


def test_bad_keys_rejected():
    with pytest.raises(ValueError):
        SrtpContext(0x0002, bytes(16), bytes(14))
    with pytest.raises(ValueError):
        SrtpContext(CM, bytes(15), bytes(14))
    with pytest.raises(ValueError):
        SrtpContext(CM, bytes(16), bytes(12))
    with pytest.raises(ValueError):
        SrtpContext(GCM, bytes(16), bytes(14))


def test_srtp_error_carries_code_and_reason():
    error = SrtpError(SRTP_ERR_REPLAY)
    assert error.code == SRTP_ERR_REPLAY and error.reason == "replay"


# ---- RFC test vectors -----------------------------------------------------------------------


def test_rfc3711_b2_aes_cm_keystream():
    """RFC 3711 Appendix B.2: session key/salt, SSRC 0, index 0; zero payload = keystream."""
    ctx = SrtpContext(CM, bytes(16), bytes(14))
    ctx._set_session_keys(False, h("2B7E151628AED2A6ABF7158809CF4F3C"),
                          h("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"), bytes(20))
    packet = rtp(0, ssrc=0, payload=bytes(48), ts=0)
    protected = ctx._protect_with_index(packet, 0)
    assert protected[12:60] == h(
        "E03EAD0935C95E80E166B16DD92B4EB4"
        "D23513162B02D0F72A43A2FE4A5F97AB"
        "41E95B3BB0A2E8DD477901E4FCA894C0"
    )


B3_MASTER_KEY = h("E1F97A0D3E018BE0D64FA32C06DE4139")
B3_MASTER_SALT = h("0EC675AD498AFEEBB6960B3AABE6")


def test_rfc3711_b3_key_derivation():
    """RFC 3711 Appendix B.3: labels 0, 1, 2 from the master key; a context keyed by the
    master key protects exactly like one given the RFC's session keys."""
    derived = SrtpContext(CM, B3_MASTER_KEY, B3_MASTER_SALT)
    direct = SrtpContext(CM, bytes(16), bytes(14))
    direct._set_session_keys(
        False,
        h("C61E7A93744F39EE10734AFE3FF7A087"),            # cipher key
        h("30CBBC08863D8C85D49DB34A9AE1"),                # cipher salt
        h("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"),    # auth key (first 160 bits)
    )
    for index in (0, 1, 0x12345, (7 << 16) | 65535):
        packet = rtp(index & 0xFFFF, payload=bytes(range(100)))
        assert derived._protect_with_index(packet, index) == direct._protect_with_index(packet, index)


def test_libsrtp_driver_cm80_packet():
    """libsrtp test/srtp_driver.c AES_CM_128_HMAC_SHA1_80 packet (KDF + AES-CM + HMAC)."""
    ctx = SrtpContext(CM, B3_MASTER_KEY, B3_MASTER_SALT)
    plain = h("800f1234decafbadcafebabe" + "ab" * 16)
    expected = h("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb")
    assert ctx.protect(plain) == expected
    assert SrtpContext(CM, B3_MASTER_KEY, B3_MASTER_SALT).unprotect(expected) == plain


RFC7714_KEY = h("000102030405060708090a0b0c0d0e0f")
RFC7714_SALT = h("517569642070726f2071756f")  # "Quid pro quo"


def rfc7714_context():
    """The RFC 7714 §16/§17 vectors give session key and salt directly (no KDF)."""
    ctx = SrtpContext(GCM, bytes(16), bytes(12))
    ctx._set_session_keys(False, RFC7714_KEY, RFC7714_SALT)
    ctx._set_session_keys(True, RFC7714_KEY, RFC7714_SALT)
    return ctx


RFC7714_RTP = h(
    "8040f17b8041f8d35501a0b2"
    "47616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573"
)
RFC7714_SRTP = h(
    "8040f17b8041f8d35501a0b2"
    "f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833"
    "899d7f27beb16a9152cf765ee4390cce"
)


def test_rfc7714_16_1_srtp_aes_128_gcm():
    """RFC 7714 §16.1.1 / §16.1.2: SSRC 0x5501a0b2, ROC 0, SEQ 0xf17b."""
    assert rfc7714_context()._protect_with_index(RFC7714_RTP, 0xF17B) == RFC7714_SRTP
    plain, index = rfc7714_context()._unprotect_with_index(RFC7714_SRTP)
    assert plain == RFC7714_RTP and index == 0xF17B
    # the same through an independent AES-GCM: IV per §8.1, AAD = header (§8.2)
    iv = bytes(a ^ b for a, b in zip(h("00005501a0b200000000f17b"), RFC7714_SALT, strict=False))
    ct = AESGCM(RFC7714_KEY).encrypt(iv, RFC7714_RTP[12:], RFC7714_RTP[:12])
    assert RFC7714_SRTP == RFC7714_RTP[:12] + ct


RFC7714_RTCP = h(
    "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61"
    "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef"
)
RFC7714_SRTCP = h(
    "81c8000d4d617273"
    "63e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda4ce09b4686303ded0bb9275b"
    "c84aa45896cf4d2fc5abf87245d9eade"
    "800005d4"
)


def test_rfc7714_17_1_srtcp_aes_128_gcm():
    """RFC 7714 §17.1: sender report, SSRC "Mars", SRTCP index 0x5d4; tag then E||index."""
    ctx = rfc7714_context()
    ctx._set_srtcp_index(0x5D4)
    assert ctx.protect_rtcp_packet(RFC7714_RTCP) == RFC7714_SRTCP
    assert rfc7714_context().unprotect_rtcp_packet(RFC7714_SRTCP) == RFC7714_RTCP


# ---- interop with libsrtp (pylibsrtp) ------------------------------------------------------

SIZES = [0, 1, 15, 16, 17, 100, 160, 500, 1000, 1200, 1300, 1344]  # payload bytes
SHAPES = [
    {},
    {"csrcs": (0xAAAA0001,)},
    {"csrcs": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)},
    {"ext": (0xBEDE, bytes([0x10, 0xAB, 0x21, 0x01, 0x02, 0x00, 0x00, 0x00]))},
    {"ext": (0x1000, bytes(range(12))), "csrcs": (0xC0FFEE,)},
    {"ext": (0xBEDE, b"")},
]


def packets(seq_start, count, ssrc, max_len, seed):
    """Packets across shapes and sizes, sequence numbers counting up (and wrapping)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        shape = SHAPES[i % len(SHAPES)]
        header_len = len(rtp(0, **shape))
        size = min(SIZES[i % len(SIZES)], max_len - header_len)
        out.append(rtp(seq_start + i, ssrc=ssrc, payload=rng.randbytes(size), **shape))
    return out


@pytest.mark.parametrize("profile", PROFILES)
def test_ours_protect_libsrtp_unprotect_across_wrap(profile):
    ours_tx, _, lib_tx, lib_rx = pair(profile)
    # 65500 .. 65535, 0 .. 63: the ROC goes 0 -> 1 in the middle
    for packet in packets(65500, 100, 0x5EED0001, 1400, seed=2):
        protected = ours_tx.protect(packet)
        assert len(protected) == len(packet) + srtp_overhead(profile)
        assert lib_rx.unprotect(protected) == packet
        if len(packet) <= LIBSRTP_MAX_PROTECT_INPUT:
            assert protected == lib_tx.protect(packet)  # byte for byte
    assert ours_tx.protected == 100


@pytest.mark.parametrize("profile", PROFILES)
def test_libsrtp_protect_ours_unprotect_across_wrap(profile):
    _, ours_rx, lib_tx, _ = pair(profile, seed=3)
    for i, packet in enumerate(packets(65510, 80, 0x5EED0002, LIBSRTP_MAX_PROTECT_INPUT, seed=4)):
        plain, index = ours_rx._unprotect_with_index(lib_tx.protect(packet))
        assert plain == packet
        assert index == 65510 + i  # 48-bit index: ROC 1 after the wrap
    assert ours_rx.unprotected == 80 and ours_rx.auth_failures == 0 and ours_rx.replays == 0


@pytest.mark.parametrize("profile", PROFILES)
def test_several_ssrcs_interleaved_with_libsrtp(profile):
    ours_tx, ours_rx, lib_tx, lib_rx = pair(profile, seed=5)
    streams = [packets(65530 - 7 * k, 30, 0x1000 + k, 300, seed=k) for k in range(5)]
    for step in range(30):
        for stream in streams:
            packet = stream[step]
            assert lib_rx.unprotect(ours_tx.protect(packet)) == packet
            assert ours_rx.unprotect(lib_tx.protect(packet)) == packet


@pytest.mark.parametrize("profile", PROFILES)
def test_rtcp_interop_both_ways(profile):
    ours_tx, ours_rx, lib_tx, lib_rx = pair(profile, seed=6)
    rng = random.Random(7)
    for i in range(40):
        packet = rtcp_sr(extra=rng.randbytes(4 * (i % 20)))
        protected = ours_tx.protect_rtcp_packet(packet)
        assert protected[-4 if profile == GCM else -14] & 0x80  # E bit always set
        assert protected == lib_tx.protect_rtcp(packet)  # both start at SRTCP index 1
        assert lib_rx.unprotect_rtcp(protected) == packet
        assert ours_rx.unprotect_rtcp_packet(protected) == packet


@pytest.mark.parametrize("profile", PROFILES)
def test_cdef_index_path_matches_wrapper(profile):
    """protect_rtp with the caller's 48-bit index equals the wrapper's own ROC tracking."""
    key, salt = keys(profile, 8)
    tracked = SrtpContext(profile, key, salt)
    explicit = SrtpContext(profile, key, salt)
    for index in range(65530, 65542):  # crosses 65535 -> 0
        packet = rtp(index, payload=bytes(range(50)))
        assert tracked.protect(packet) == explicit._protect_with_index(packet, index)
    # in place into a caller buffer, exactly the needed capacity
    packet = rtp(9, payload=b"x" * 33)
    buf = bytearray(packet) + bytearray(srtp_overhead(profile))
    n = explicit._protect_into(buf, len(packet), (1 << 16) | 9)
    assert n == len(buf) and bytes(buf) == tracked.protect(packet)


# ---- replay, reordering, ROC estimation -----------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_replay_and_reorder_window(profile):
    """A 1024-packet window as libwebrtc sets it (libsrtp's default is 128): a same-SSRC
    retransmission hundreds of packets late is accepted, a true replay never."""
    assert SRTP_REPLAY_WINDOW == 1024
    ours_tx, ours_rx, _, _ = pair(profile, seed=9)
    protected = {seq: ours_tx._protect_with_index(rtp(seq, payload=b"p"), seq) for seq in range(2200)}
    ours_rx.unprotect(protected[2000])
    with pytest.raises(SrtpError) as excinfo:
        ours_rx.unprotect(protected[2000])                 # duplicate
    assert code_of(excinfo) == SRTP_ERR_REPLAY
    ours_rx.unprotect(protected[1500])                     # 500 behind: refused by a 128 window
    ours_rx.unprotect(protected[977])                      # 1023 behind: the oldest accepted
    for seq in (1500, 977, 976, 0):                        # seen, seen, 1024 behind, too old
        with pytest.raises(SrtpError) as excinfo:
            ours_rx.unprotect(protected[seq])
        assert code_of(excinfo) == SRTP_ERR_REPLAY
    ours_rx.unprotect(protected[2099])                     # jump ahead by 99
    ours_rx.unprotect(protected[1101])                     # 998 behind the new highest, unseen
    with pytest.raises(SrtpError):
        ours_rx.unprotect(protected[1075])                 # 1024 behind 2099
    assert ours_rx.replays == 6 and ours_rx.unprotected == 5


@pytest.mark.parametrize("profile", PROFILES)
def test_replay_window_ring_forgets_what_it_skipped(profile):
    """The bitmap is a ring: indices skipped by a jump must not inherit the bits of packets one
    window earlier (same ring position), and a jump past the window forgets everything."""
    ours_tx, ours_rx, _, _ = pair(profile, seed=12)
    protected = {seq: ours_tx._protect_with_index(rtp(seq, payload=b"w"), seq) for seq in range(5200)}
    for seq in range(1024):
        ours_rx.unprotect(protected[seq])                  # every ring position set
    ours_rx.unprotect(protected[1500])                     # skips 1024..1499
    for seq in (1200, 1024, 1499):                         # same positions as 176, 0, 475: unseen
        ours_rx.unprotect(protected[seq])
    with pytest.raises(SrtpError):
        ours_rx.unprotect(protected[1200])                 # now seen
    ours_rx.unprotect(protected[5000])                     # past the whole window
    with pytest.raises(SrtpError):
        ours_rx.unprotect(protected[3976])                 # 1024 behind
    ours_rx.unprotect(protected[3977])                     # 1023 behind, never seen
    ours_rx.unprotect(protected[4500])
    assert ours_rx.replays == 2


@pytest.mark.parametrize("profile", PROFILES)
def test_roc_estimation_with_reordering_across_wrap(profile):
    ours_tx, ours_rx, _, _ = pair(profile, seed=10)
    order = [65533, 65535, 65537, 65534, 65536, 65539, 65538, 65532]  # indices, out of order
    for index in order:
        plain, got = ours_rx._unprotect_with_index(
            ours_tx._protect_with_index(rtp(index, payload=b"r"), index)
        )
        assert got == index and plain == rtp(index, payload=b"r")


@pytest.mark.parametrize("profile", PROFILES)
def test_rtcp_replay_and_tamper(profile):
    ours_tx, ours_rx, _, _ = pair(profile, seed=11)
    first = ours_tx.protect_rtcp_packet(rtcp_sr())
    second = ours_tx.protect_rtcp_packet(rtcp_sr())
    ours_rx.unprotect_rtcp_packet(second)
    ours_rx.unprotect_rtcp_packet(first)                   # reordered: fine
    with pytest.raises(SrtpError) as excinfo:
        ours_rx.unprotect_rtcp_packet(first)
    assert code_of(excinfo) == SRTP_ERR_REPLAY
    third = bytearray(ours_tx.protect_rtcp_packet(rtcp_sr()))
    third[10] ^= 1
    with pytest.raises(SrtpError) as excinfo:
        ours_rx.unprotect_rtcp_packet(bytes(third))
    assert code_of(excinfo) == SRTP_ERR_AUTH
    third[10] ^= 1
    assert ours_rx.unprotect_rtcp_packet(bytes(third)) == rtcp_sr()


def test_srtcp_unencrypted_e0_accepted():
    """E=0 SRTCP (RFC 3711 §3.4; RFC 7714 §9.2: whole packet as AAD) authenticates, stays plain."""
    packet = rtcp_sr()
    index = 77
    eidx = struct.pack("!I", index)  # E = 0
    # AES-CM: tag = HMAC-SHA1-80(auth key, packet || E||index)
    auth_key = bytes(range(20))
    cm = SrtpContext(CM, bytes(16), bytes(14))
    cm._set_session_keys(True, bytes(16), bytes(14), auth_key)
    tag = hmac.new(auth_key, packet + eidx, hashlib.sha1).digest()[:10]
    assert cm.unprotect_rtcp_packet(packet + eidx + tag) == packet
    # AES-GCM: IV per §9.1, empty plaintext
    gcm = rfc7714_context()
    iv = bytes(a ^ b for a, b in zip(b"\0\0" + packet[4:8] + b"\0\0" + eidx, RFC7714_SALT, strict=False))
    tag = AESGCM(RFC7714_KEY).encrypt(iv, b"", packet + eidx)
    assert gcm.unprotect_rtcp_packet(packet + tag + eidx) == packet


def test_lru_ssrc_slots():
    """More SSRCs than slots: new ones still work; an evicted SSRC restarts at ROC 0."""
    ours_tx, ours_rx, _, _ = pair(GCM, seed=12)
    for ssrc in range(40):
        for seq in (10, 11):
            ours_rx.unprotect(ours_tx._protect_with_index(rtp(seq, ssrc=ssrc), seq))
    # the most recent SSRC is still tracked: replay detected
    with pytest.raises(SrtpError) as excinfo:
        ours_rx.unprotect(ours_tx._protect_with_index(rtp(11, ssrc=39), 11))
    assert code_of(excinfo) == SRTP_ERR_REPLAY
    # the first one was evicted, so its old packet is accepted again (documented limitation)
    ours_rx.unprotect(ours_tx._protect_with_index(rtp(11, ssrc=0), 11))


# ---- malformed input -----------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_tampered_packets_fail_auth_without_moving_the_window(profile):
    ours_tx, ours_rx, _, _ = pair(profile, seed=13)
    packet = rtp(5, payload=b"payload bytes", ext=(0xBEDE, b"\x10\x01\x00\x00"))
    protected = ours_tx.protect(packet)
    # header, extension profile, extension data, payload, tag
    for position in (1, 7, 11, 13, 17, 25, len(packet) + 1, len(protected) - 1):
        tampered = bytearray(protected)
        tampered[position] ^= 0x40
        with pytest.raises(SrtpError) as excinfo:
            ours_rx.unprotect(bytes(tampered))
        assert code_of(excinfo) == SRTP_ERR_AUTH
    assert ours_rx.auth_failures == 8
    assert ours_rx.unprotect(protected) == packet


@pytest.mark.parametrize("profile", PROFILES)
def test_short_and_malformed(profile):
    ours_tx, ours_rx, _, _ = pair(profile, seed=14)
    tag = srtp_overhead(profile)
    protected = ours_tx.protect(rtp(1, payload=b"abc"))
    for bad in (b"", protected[:11], protected[: 12 + tag - 1]):
        with pytest.raises(SrtpError) as excinfo:
            ours_rx.unprotect(bad)
        assert code_of(excinfo) == SRTP_ERR_SHORT
    # CSRC count / extension length pointing past the end, and version != 2
    for bad_header in (
        bytes([0x8F]) + protected[1:12],
        bytes([0x90]) + protected[1:12] + b"\xbe\xde\x00\x09",
        bytes([0x40]) + protected[1:],
    ):
        with pytest.raises(SrtpError) as excinfo:
            ours_rx.unprotect(bad_header + bytes(tag))
        assert code_of(excinfo) == SRTP_ERR_SHORT
    with pytest.raises(SrtpError) as excinfo:
        ours_tx.protect(rtp(1)[:11])
    assert code_of(excinfo) == SRTP_ERR_SHORT
    for bad in (b"", rtcp_sr()[:7 + 4 + tag]):
        with pytest.raises(SrtpError) as excinfo:
            ours_rx.unprotect_rtcp_packet(bad)
        assert code_of(excinfo) == SRTP_ERR_SHORT
    with pytest.raises(SrtpError) as excinfo:
        ours_tx.protect_rtcp_packet(b"\x80\xc8\x00")
    assert code_of(excinfo) == SRTP_ERR_SHORT


@pytest.mark.parametrize("profile", PROFILES)
def test_capacity(profile):
    ctx = SrtpContext(profile, *keys(profile, 15))
    tag = srtp_overhead(profile)
    packet = rtp(3, payload=b"z" * 20)
    buf = bytearray(packet) + bytearray(tag - 1)
    assert ctx._protect_into(buf, len(packet), 3) == SRTP_ERR_CAPACITY
    assert bytes(buf[: len(packet)]) == packet  # untouched
    report = rtcp_sr()
    buf = bytearray(report) + bytearray(4 + tag - 1)
    assert ctx._protect_into(buf, len(report), 0, True) == SRTP_ERR_CAPACITY
    buf.append(0)
    assert ctx._protect_into(buf, len(report), 0, True) == len(buf)
    assert ctx.protected == 1


@pytest.mark.parametrize("profile", PROFILES)
def test_random_bytes_never_crash(profile):
    _, ours_rx, _, _ = pair(profile, seed=16)
    rng = random.Random(17)
    codes = set()
    for i in range(10_000):
        data = rng.randbytes(rng.randrange(0, 120 if i % 2 else 1500))
        if i % 3 == 0 and data:
            data = bytes([0x80 | (data[0] & 0x3F)]) + data[1:]  # plausible version bits
        for unprotect in (ours_rx.unprotect, ours_rx.unprotect_rtcp_packet):
            with pytest.raises(SrtpError) as excinfo:
                unprotect(data)
            codes.add(code_of(excinfo))
    assert codes == {SRTP_ERR_SHORT, SRTP_ERR_AUTH}
    assert ours_rx.unprotected == 0


@pytest.mark.parametrize("profile", PROFILES)
def test_key_derivation_matches_independent_aes_cm_prf(profile):
    """RFC 3711 §4.3.1 with an independent AES-CTR: the RTCP labels 3..5 too (RFC 7714 §11 pads
    a 96-bit salt with zeros). Checked through the RFC 7714 / RFC 3711 transforms."""
    key, salt = keys(profile, 18)

    def prf(label, n):
        x = bytearray(salt.ljust(14, b"\0") + b"\0\0")
        x[7] ^= label
        return Cipher(algorithms.AES(key), modes.CTR(bytes(x))).encryptor().update(bytes(n))

    salt_len = len(salt)
    derived = SrtpContext(profile, key, salt)
    direct = SrtpContext(profile, bytes(16), bytes(salt_len))
    auth = profile == CM
    direct._set_session_keys(False, prf(0, 16), prf(2, salt_len), prf(1, 20) if auth else None)
    direct._set_session_keys(True, prf(3, 16), prf(5, salt_len), prf(4, 20) if auth else None)
    packet = rtp(4, payload=b"derive")
    assert derived._protect_with_index(packet, 4) == direct._protect_with_index(packet, 4)
    assert derived.protect_rtcp_packet(rtcp_sr()) == direct.protect_rtcp_packet(rtcp_sr())
