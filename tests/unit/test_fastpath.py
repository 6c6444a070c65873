"""The fast path's pure pieces: keyframe sniffers and the address table (no sockets)."""

from __future__ import annotations

import socket

import pytest

from sfu import _fastpath as fp


@pytest.mark.parametrize(
    ("codec", "payload", "key"),
    [
        # VP8 (RFC 7741): descriptor S=1 PID=0, then payload header P bit 0 = key frame
        (fp.CODEC_VP8, bytes([0x10, 0x00, 0x9D, 0x01, 0x2A]), True),
        (fp.CODEC_VP8, bytes([0x10, 0x01, 0x00, 0x00]), False),  # P=1: inter frame
        (fp.CODEC_VP8, bytes([0x00, 0x00, 0x9D, 0x01, 0x2A]), False),  # S=0: not a frame start
        # X=1, I=1 with a 15-bit picture id (M=1), then the payload header
        (fp.CODEC_VP8, bytes([0x90, 0x80, 0x80 | 0x12, 0x34, 0x00]), True),
        # H.264 (RFC 6184): IDR, SPS, STAP-A holding an SPS, FU-A start of an IDR, a P slice
        (fp.CODEC_H264, bytes([0x65, 0x88]), True),
        (fp.CODEC_H264, bytes([0x67, 0x42]), True),
        (fp.CODEC_H264, bytes([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE]), True),
        (fp.CODEC_H264, bytes([0x7C, 0x85, 0x88]), True),
        (fp.CODEC_H264, bytes([0x7C, 0x05, 0x88]), False),  # FU-A continuation
        (fp.CODEC_H264, bytes([0x41, 0x9A]), False),
        # VP9: P=0 and B=1 starts a key picture; P=1 does not
        (fp.CODEC_VP9, bytes([0x08, 0x00]), True),
        (fp.CODEC_VP9, bytes([0x48, 0x00]), False),
        # AV1: aggregation header N=1 starts a coded video sequence
        (fp.CODEC_AV1, bytes([0x08, 0x00]), True),
        (fp.CODEC_AV1, bytes([0x10, 0x00]), False),
        (fp.CODEC_AUDIO, bytes([0xFF, 0xFF]), False),
    ],
)
def test_keyframe_sniffers(codec, payload, key):
    assert fp.sniff_keyframe_py(payload, codec) is key


def test_sniffers_survive_truncated_payloads():
    for codec in (fp.CODEC_VP8, fp.CODEC_VP9, fp.CODEC_H264, fp.CODEC_AV1):
        for length in range(0, 4):
            for first in range(256):
                fp.sniff_keyframe_py(bytes([first]) + b"\xff" * length, codec)


def test_address_table_grows_and_forgets():
    router = fp.Router(-1, socket.AF_INET6)
    endpoints = [fp.Endpoint() for _ in range(8)]
    addresses = [(f"10.{i // 250}.{i % 250}.1", 1000 + i) for i in range(3000)]
    for i, addr in enumerate(addresses):
        router.map_address(addr, endpoints[i % 8])
    assert router.mapped_addresses == 3000
    for i, addr in enumerate(addresses):
        assert router.endpoint_for(addr) is endpoints[i % 8]
    # an IPv4 address and its IPv4-mapped IPv6 form are the same key
    assert router.endpoint_for(("::ffff:10.0.0.1", 1000)) is endpoints[0]
    for addr in addresses[::2]:
        router.unmap_address(addr)
    assert router.mapped_addresses == 1500
    assert all(router.endpoint_for(a) is None for a in addresses[::2])
    assert all(router.endpoint_for(a) is not None for a in addresses[1::2])
    router.map_address(addresses[0], endpoints[3])  # re-use after a tombstone
    assert router.endpoint_for(addresses[0]) is endpoints[3]
    assert router.endpoint_for(("2001:db8::1", 5)) is None
