"""Micro-benchmark: SRTP protect/unprotect of 1200-byte payloads, ours (sfu._fastpath) vs pylibsrtp.

    python bench/srtp_micro.py [--payload 1200] [--repeats 7]

Columns: CPU µs per packet (thread CPU time, steadier than wall time on a shared machine), best of
--repeats runs; compare within one run:
  ours, C loop      SrtpContext.protect_rtp / unprotect_rtp called from a C loop (_bench_* helpers);
                    the unprotect loop also copies the packet into the buffer each time (~0.02 µs)
                    and clears the replay bits so the same packet can be replayed
  ours, Python API  SrtpContext.protect / unprotect per packet (one call + allocation each)
  pylibsrtp         pylibsrtp.Session.protect / unprotect (libsrtp 2.7 + OpenSSL 3.5, via cffi)
"""

import argparse
import os
import struct
import time

from pylibsrtp import Policy, Session

from sfu._fastpath import (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AES128_CM_SHA1_80,
    SrtpContext,
    srtp_key_lengths,
)

PROFILES = [
    ("AES_CM_128_HMAC_SHA1_80", SRTP_AES128_CM_SHA1_80, Policy.SRTP_PROFILE_AES128_CM_SHA1_80),
    ("AEAD_AES_128_GCM", SRTP_AEAD_AES_128_GCM, Policy.SRTP_PROFILE_AEAD_AES_128_GCM),
]
C_LOOP_PACKETS = 200_000      # per run of the C loop
PY_LOOP_PACKETS = 20_000      # per run of a Python loop (distinct packets for unprotect)
SSRC = 0x1234ABCD


def rtp(seq: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, 90000, SSRC) + payload


def best(fn, repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def per_packet_python(call, items) -> float:
    start = time.thread_time()
    for item in items:
        call(item)
    return (time.thread_time() - start) / len(items)


def measure(profile: int, lib_profile: int, payload_len: int, repeats: int) -> dict:
    key_len, salt_len = srtp_key_lengths(profile)
    key, salt = os.urandom(key_len), os.urandom(salt_len)
    payload = os.urandom(payload_len)
    packet = rtp(7, payload)
    stream = [rtp(seq, payload) for seq in range(PY_LOOP_PACKETS)]

    sender = SrtpContext(profile, key, salt)
    protected = [sender._protect_with_index(p, seq) for seq, p in enumerate(stream)]

    lib_policy = Policy(key=key + salt, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=lib_profile)
    lib_policy.allow_repeat_tx = True  # the same packet over and over
    lib_sender = Session(lib_policy)

    def lib_receiver() -> Session:
        return Session(Policy(key=key + salt, ssrc_type=Policy.SSRC_ANY_INBOUND,
                              srtp_profile=lib_profile))

    def ours_receiver() -> SrtpContext:
        return SrtpContext(profile, key, salt)

    assert lib_receiver().unprotect(protected[0]) == stream[0]  # same keys, same transform

    results = {
        ("protect", "c"): best(lambda: sender._bench_protect(packet, C_LOOP_PACKETS) / C_LOOP_PACKETS,
                               repeats),
        ("unprotect", "c"): best(
            lambda: ours_receiver()._bench_unprotect(protected[7], C_LOOP_PACKETS) / C_LOOP_PACKETS,
            repeats),
        ("protect", "py"): best(lambda: per_packet_python(sender.protect, [packet] * PY_LOOP_PACKETS),
                                repeats),
        ("unprotect", "py"): best(lambda: per_packet_python(ours_receiver().unprotect, protected),
                                  repeats),
        ("protect", "lib"): best(
            lambda: per_packet_python(lib_sender.protect, [packet] * PY_LOOP_PACKETS), repeats),
        ("unprotect", "lib"): best(lambda: per_packet_python(lib_receiver().unprotect, protected),
                                   repeats),
    }
    return {k: v * 1e6 for k, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payload", type=int, default=1200, help="RTP payload bytes")
    parser.add_argument("--repeats", type=int, default=7, help="runs per cell; the best is kept")
    args = parser.parse_args()

    print(f"SRTP, {args.payload}-byte payload + 12-byte header, µs per packet "
          f"(best of {args.repeats})")
    header = f"{'profile':<24} {'op':<10} {'ours, C loop':>13} {'ours, Python':>13} {'pylibsrtp':>10}"
    print(header)
    print("-" * len(header))
    for name, profile, lib_profile in PROFILES:
        r = measure(profile, lib_profile, args.payload, args.repeats)
        for op in ("protect", "unprotect"):
            print(f"{name:<24} {op:<10} {r[op, 'c']:>13.3f} {r[op, 'py']:>13.3f} "
                  f"{r[op, 'lib']:>10.3f}")


if __name__ == "__main__":
    main()
