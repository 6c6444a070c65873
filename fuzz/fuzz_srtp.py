"""Fuzz target: SRTP / SRTCP unprotect in the Cython fast path (sfu/_srtp.pxi), both profiles.

Each run builds a sender and a receiver context under one real key (AES128_CM_SHA1_80 or
AEAD_AES_128_GCM), then either hands the fuzzed bytes straight to unprotect (junk from the network),
or protects fuzzed plaintext packets with the sender, applies fuzzed bit flips, truncations and
reorderings, and unprotects them in that order (a replay window, ROC estimation per SSRC).
Crash: a process crash, any exception other than `SrtpError`, or an unprotect that returns anything
but exactly the plaintext that was protected (a flipped bit must never pass authentication).
Coverage: the C code is not instrumented; libFuzzer sees the harness's Python branches only.
"""

from __future__ import annotations

from _common import Reader, instrumented, main

with instrumented(__name__):
    from sfu._fastpath import SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80, SrtpContext, SrtpError, srtp_key_lengths

PROFILES = (SRTP_AES128_CM_SHA1_80, SRTP_AEAD_AES_128_GCM)
KEYS = {p: (bytes(range(1, 1 + srtp_key_lengths(p)[0])), bytes(range(100, 100 + srtp_key_lengths(p)[1])))
        for p in PROFILES}


def _pair(profile: int) -> tuple[SrtpContext, SrtpContext]:
    key, salt = KEYS[profile]
    return SrtpContext(profile, key, salt), SrtpContext(profile, key, salt)


def check(data: bytes) -> None:
    r = Reader(data)
    mode = r.byte()
    profile = PROFILES[mode & 1]
    rtcp = bool(mode & 2)
    tx, rx = _pair(profile)
    unprotect = rx.unprotect_rtcp_packet if rtcp else rx.unprotect
    if mode & 4 == 0:  # junk straight from the network
        try:
            unprotect(r.rest())
        except SrtpError:
            pass
        return
    sent: list[tuple[bytes, bytes]] = []  # (plaintext, protected)
    accepted: set[bytes] = set()
    for _ in range(1 + (mode >> 5)):
        plain = r.chunk()
        try:
            wire = tx.protect_rtcp_packet(plain) if rtcp else tx.protect(plain)
        except SrtpError:
            continue
        sent.append((plain, wire))
    while sent and r.left():
        op = r.byte()
        plain, wire = sent[op % len(sent)]
        tampered = bytearray(wire)
        for _ in range(op >> 6):  # 0-3 bit flips
            if tampered:
                pos = r.u16() % len(tampered)
                tampered[pos] ^= 1 << (r.byte() & 7)
        if op & 0x20 and tampered:
            del tampered[r.u16() % len(tampered):]
        try:
            out = unprotect(bytes(tampered))
        except SrtpError:
            continue
        assert bytes(tampered) == wire and out == plain, (wire.hex(), bytes(tampered).hex(), out.hex())
        assert wire not in accepted, f"replayed packet accepted: {wire.hex()}"
        accepted.add(wire)


if __name__ == "__main__":
    main(check)
