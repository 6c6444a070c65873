#!/usr/bin/env python3
"""Write the seed corpora (fuzz/corpus/<target>/seed-*) from real samples and the project's own
builders: the real offers of tests/unit/sdp_samples.py, the RTCP vectors of tests/unit/test_rtcp.py
(Chrome, pion), STUN requests from `stun.binding_request`, RTP packets of each codec as browsers
packetize them. Re-running rewrites the files (the same bytes, but for the random STUN transaction ids).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from sfu import _fastpath as fp  # noqa: E402
from sfu.wire import rtcp, stun  # noqa: E402


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write(target: str, name: str, data: bytes) -> None:
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"seed-{name}"), "wb") as f:
        f.write(data)


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def chunk(data: bytes) -> bytes:
    return u16(len(data)) + data


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False, ext: bytes | None = None,
        profile: int = 0xBEDE, csrcs: int = 0, pad: int = 0) -> bytes:
    first = 0x80 | (0x10 if ext is not None else 0) | (0x20 if pad else 0) | csrcs
    out = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    out += bytes(4 * csrcs)
    if ext is not None:
        ext += bytes(-len(ext) % 4)
        out += struct.pack("!HH", profile, len(ext) // 4) + ext
    out += payload
    if pad:
        out += bytes(pad - 1) + bytes([pad])
    return out


# --- payloads as browsers packetize them --------------------------------------------------------
VP8_KEY = bytes([0x90, 0xE0, 0x80, 0x05, 0x12, 0x34]) + bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01]) + bytes(40)
VP8_DELTA = bytes([0x90, 0x80, 0x80, 0x06]) + bytes([0x01]) + bytes(30)
VP9_KEY = bytes([0xAA, 0x80, 0x07, 0x00, 0x18, 0x05, 0x00, 0x02, 0xD0, 0x01, 0x00]) + bytes(30)  # I L B V + SS
H264_STAP_SPS = (bytes([0x18]) + chunk(bytes([0x67, 0x42, 0xC0, 0x1F, 0xDA, 0x01, 0x40, 0x16, 0xE8]))
                 + chunk(bytes([0x68, 0xCE, 0x3C, 0x80])) + chunk(bytes([0x65, 0x88, 0x84]) + bytes(20)))
H264_FU_A = bytes([0x7C, 0x85]) + bytes(30)
AV1_NEW = bytes([0x18, 0x0A, 0x0B, 0x00, 0x00, 0x00]) + bytes(20)
OPUS = bytes([0xFC]) + bytes(40)
RED = bytes([0x80 | 111, 0x00, 0x40, 0x05, 111]) + b"older" + b"primary"


def stun_seeds() -> None:
    pwd = "fuzzLocalPassword0123456"
    _, req = stun.binding_request("srvUfrag:cliUfrag", pwd, use_candidate=True, tie_breaker=0x1122334455667788)
    write("stun", "binding-request", b"\x00" + req)
    _, req2 = stun.binding_request("srvUfrag:cliUfrag", pwd, controlling=False, tie_breaker=7)
    write("stun", "binding-request-controlled", b"\x00" + req2)
    ok = stun.binding_success(stun.parse_binding_request(req, pwd), ("192.0.2.1", 5000), pwd)
    write("stun", "binding-success", b"\x00" + ok)
    write("stun", "binding-error", b"\x00" + stun.binding_error(req[8:20], 400, "Bad Request", None))
    # the attributes alone, for the harness to sign and fingerprint (modes 3 and 1)
    attrs = req[20:-32]
    write("stun", "attrs-signed", b"\x03" + req[8:20] + attrs)
    write("stun", "attrs-fingerprint", b"\x01" + req[8:20] + attrs)


def rtcp_packets() -> list[bytes]:
    block = rtcp.ReportBlock(0x01020304, 12, -3, 0x00010203, 55, 0x11223344, 0x5566)
    packets = [
        rtcp.serialize([rtcp.SenderReport(0x1111, 0xE1234567_89ABCDEF, 90000, 10, 12000, [block]),
                        rtcp.Sdes([(0x1111, [(1, b"cname@host")])])]),
        rtcp.serialize([rtcp.ReceiverReport(0x2222, [block, block]), rtcp.Bye([0x2222], b"bye")]),
        rtcp.serialize([rtcp.Nack(1, 0x1111, [100, 101, 105, 65535, 0])]),
        rtcp.serialize([rtcp.Pli(1, 0x1111), rtcp.Fir(1, [(0x1111, 3)])]),
        rtcp.serialize([rtcp.Remb(1, 1_500_000, [0x1111, 0x2222])]),
        rtcp.serialize([rtcp.ExtendedReport(1, [rtcp.Rrtr(0xE1234567_89ABCDEF), rtcp.Dlrr([(0x1111, 5, 6)])])]),
        rtcp.serialize([rtcp.App(1, 0x1111, b"TEST", b"abcd")]),
        # Chrome (libwebrtc) and pion transport-cc vectors of tests/unit/test_rtcp.py
        bytes.fromhex("afcd0007" "00000001" "dd586eb6" "00010009" "5e911000" "2009" "1c0c2c38000400081801"),
        bytes.fromhex("afcd0007" "9b74f61f" "9371dcbc" "853c0009" "63f916b3" "d5520030" "9baa6aaa7b010901"),
        bytes.fromhex("8fcd0007" "fa17fa17" "193dd8bb" "01740006" "45b15a40" "40022004" "1ffe1f9a" "d000d000"),
        bytes.fromhex("afcd0007" "fa17fa17" "43032fa0" "9c14000c" "75842000" "bec0c13f" "3b3f5390" "3b000003"),
    ]
    arrivals = [(i, None if i % 7 == 3 else 1_000_000 + i * 900 + (i % 5) * 70_000) for i in range(60)]
    packets.append(rtcp.serialize(rtcp.build_transport_cc(1, 2, arrivals, 3)))
    return packets


def main() -> None:
    stun_seeds()
    for i, p in enumerate(rtcp_packets()):
        write("rtcp", f"{i:02d}", p)
    samples = _load("tests/unit/sdp_samples.py", "_sdp_samples")
    for name, offer in samples.ALL_OFFERS.items():
        write("sdp", name, offer.encode())
    write("sdpfrag", "chrome-candidates", (
        b"a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=group:BUNDLE 0 1\r\n"
        b"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
        b"a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n"
        b"a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ srflx raddr 0.0.0.0 rport 0\r\n"
        b"a=end-of-candidates\r\n"))
    write("sdpfrag", "session-level", b"a=ice-ufrag:abcd\na=ice-pwd:0123456789abcdefghijklmn\n"
          b"a=candidate:1 1 UDP 2130706431 2001:db8::1 5000 typ host\na=end-of-candidates\n")
    write("sdpfrag", "ice-restart", b"a=ice-options:trickle ice2\na=ice-ufrag:newU\na=ice-pwd:newpasswordnewpassword12\n"
          b"m=video 9 UDP/TLS/RTP/SAVPF 96\na=mid:1\na=ice-ufrag:newU\na=ice-pwd:newpasswordnewpassword12\n")
    # tokens: mode, now (u32 * 2), now fraction, stream length + stream, then header or claims
    secret = b"fuzz-secret-0123456789abcdef0123"
    now = 1_800_000_000
    claims = {"sub": "p-1", "stream": "shop-*", "caps": ["publish", "subscribe"], "iat": now - 10, "exp": now + 3600,
              "iss": "sfu"}
    head = struct.pack("!I", now // 2) + b"\x00" + bytes([6]) + b"shop-1"
    write("tokens", "signed-claims", b"\x01" + head + json.dumps(claims).encode())
    write("tokens", "signed-claims-subscribe", b"\x81" + head + json.dumps(claims).encode())
    import jwt  # the project's own dependency: a token as `sfu token` mints it
    token = jwt.encode(claims, secret, algorithm="HS256")
    write("tokens", "bearer", b"\x00" + head + b"Bearer " + token.encode())
    write("tokens", "bare", b"\x00" + head + token.encode())
    write("tokens", "other-key", b"\x00" + head + b"bearer " + jwt.encode(claims, b"x" * 32, algorithm="HS256").encode())
    write("tokens", "alg-none", b"\x00" + head + base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=") + b"."
          + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=") + b".")
    # srtp: mode bit 0 profile, bit 1 rtcp, bit 2 protect+tamper, bits 5-7 extra packets
    media = rtp(96, 1000, 90000, 0x1001, VP8_KEY, ext=bytes([0x22, 0x01, 0x02, 0x03]))
    for profile in (0, 1):
        write("srtp", f"rtp-{profile}", bytes([4 | profile | 0x20]) + chunk(media) + chunk(rtp(111, 7, 960, 5, OPUS))
              + bytes([0, 1, 0x41, 0x00, 0x05, 0x03, 0x20, 0x00, 0x08]))
        write("srtp", f"rtcp-{profile}", bytes([6 | profile]) + chunk(rtcp_packets()[0]) + bytes([0, 0, 0x40, 0, 3, 1]))
    key, salt = bytes(range(1, 17)), bytes(range(100, 114))
    write("srtp", "junk-protected", b"\x00" + fp.SrtpContext(fp.SRTP_AES128_CM_SHA1_80, key, salt).protect(media))
    # router programs: op, time step, then the op's operands (see fuzz_router.check)
    twcc_ext = bytes([0x31, 0x00, 0x05])  # id 3 (transport-wide seq), 2 bytes
    prog = b""
    seq = 100
    for payload, ssrc_index, pt in ((VP8_KEY, 0, 96), (VP8_DELTA, 0, 96), (VP8_KEY, 1, 96), (VP9_KEY, 2, 98),
                                    (H264_STAP_SPS, 3, 102), (H264_FU_A, 3, 102), (AV1_NEW, 4, 45), (RED, 5, 63)):
        prog += bytes([1 | 8 | (ssrc_index << 4), 3]) + chunk(rtp(pt, seq, seq * 3000, 0, payload, True, twcc_ext))
        seq += 1
    seq += 3  # a gap for the loss events and the resend
    prog += bytes([1 | 8, 3]) + chunk(rtp(96, seq, seq * 3000, 0, VP8_DELTA, ext=bytes([0x10, 0x00, 0x07, 0x00, 0x01, 0x02]),
                                          profile=0x1000))
    prog += bytes([1 | 8 | (6 << 4), 3]) + chunk(rtp(97, 5, 0, 0, u16(seq - 2) + VP8_DELTA))  # RTX
    prog += bytes([2, 3]) + chunk(rtcp_packets()[2])
    prog += bytes([5, 3, 4]) + u16(1000) + u16(1001) + u16(1002) + u16(5)
    prog += bytes([6 | 0x10, 3]) + bytes([7, 3]) + u16(900)
    prog += bytes([0, 1]) + chunk(bytes([0x16, 0xFE, 0xFD]) + bytes(20)) + bytes([3, 1]) + chunk(b"\x00\x01" + bytes(18))
    write("router", "session", prog)
    write("router", "inject", bytes([4 | 8, 2]) + chunk(rtp(96, 1, 1, 0, VP8_KEY, pad=4, csrcs=2)))
    # twcc: mode, start offset, sends, window, then [op + chunk] compounds
    sends = bytes([80]) + bytes((i * 37) & 0xFF for i in range(80))
    body = rtcp.serialize(rtcp.build_transport_cc(1, 2, [(i, 1_000_000 + i * 900) for i in range(5, 40)], 0))
    write("twcc", "matched", b"\x20" + b"\x05" + sends + b"\x00" + chunk(body) + b"\x01" + chunk(body[4:]))
    write("twcc", "libwebrtc", b"\x01" + b"\x00" + bytes([12]) + bytes(12) + b"\x00" + chunk(rtcp_packets()[7]))
    write("twcc", "pion-wrap", b"\x83" + b"\x10" + sends + b"\x02\x30" + b"\x04" + chunk(rtcp_packets()[9]))
    # keyframe: codec selector byte, then a payload
    for i, payload in enumerate((VP8_KEY, VP8_DELTA, VP9_KEY, H264_STAP_SPS, H264_FU_A, AV1_NEW, RED)):
        codec = (0, 0, 1, 2, 2, 3, 4)[i]
        # RED: selector 239 = audio (239 % 5 == 4) with source PT 111 (239 & 0x7F) to rewrite
        write("keyframe", f"{i}", bytes([239 if i == 6 else codec]) + payload)


if __name__ == "__main__":
    main()
    print("seeds written under", os.path.join(HERE, "corpus"))
