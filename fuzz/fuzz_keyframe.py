"""Fuzz target: the payload sniffers of the Cython fast path: keyframe detection for VP8, VP9,
H.264 and AV1 (`sniff_keyframe`, sfu/_fastpath.pyx) and the Opus RED block parser and payload type
rewriter (`red_primary`, `red_rewrite_pts`, sfu/_repair.pxi), through their Python hooks.

Each is compared with a bounds-checked Python reading of its spec (RFC 7741 §4.2-4.3, RFC 6184
§5.6-5.8, draft-ietf-payload-vp9 §4.2, the AV1 RTP spec §4.4, RFC 2198 §3): a C read past the end of
the payload would show up as a different answer (and a wild one as a crash).
Crash: a process crash, any exception, or a disagreement with the reference.
Coverage: the C code is not instrumented; libFuzzer sees the references' Python branches.
"""

from __future__ import annotations

from _common import instrumented, main

with instrumented(__name__):
    from sfu import _fastpath as fp

CODECS = (fp.CODEC_VP8, fp.CODEC_VP9, fp.CODEC_H264, fp.CODEC_AV1, fp.CODEC_AUDIO)


def _at(p: bytes, i: int) -> int | None:
    return p[i] if 0 <= i < len(p) else None


def ref_keyframe(p: bytes, codec: int) -> bool:
    if not p:
        return False
    if codec == fp.CODEC_VP8:
        # RFC 7741 §4.2: X|R|N|S|R|PID, then I|L|T|K, PictureID (M bit: 15-bit), TL0PICIDX, TID|Y|KEYIDX
        i = 1
        if p[0] & 0x80:
            x = _at(p, 1)
            if x is None:
                return False
            i = 2
            if x & 0x80:
                m = _at(p, i)
                if m is None:
                    return False
                i += 2 if m & 0x80 else 1
            if x & 0x40:
                i += 1
            if x & 0x30:
                i += 1
        if not p[0] & 0x10 or p[0] & 0x07:
            return False
        header = _at(p, i)  # §4.3: P bit (inverse key frame flag)
        return header is not None and header & 0x01 == 0
    if codec == fp.CODEC_H264:
        nal = p[0] & 0x1F
        if nal in (5, 7):  # IDR slice, SPS
            return True
        if nal == 24:  # STAP-A (RFC 6184 §5.7.1): 16-bit size, NAL unit, ...
            i = 1
            while i + 2 < len(p):
                size = (p[i] << 8) | p[i + 1]
                if size == 0 or i + 2 + size > len(p):
                    return False
                if p[i + 2] & 0x1F in (5, 7):
                    return True
                i += 2 + size
            return False
        if nal == 28 and len(p) >= 2:  # FU-A (§5.8): start bit and the fragmented NAL's type
            return bool(p[1] & 0x80) and p[1] & 0x1F == 5
        return False
    if codec == fp.CODEC_VP9:
        # I|P|L|F|B|E|V|Z: a key picture's first packet has P = 0 and B = 1, spatial id 0
        if p[0] & 0x40 or not p[0] & 0x08:
            return False
        if p[0] & 0x20:  # layer indices present: TID|U|SID|D after the picture id
            off = 1
            if p[0] & 0x80:
                m = _at(p, 1)
                if m is None:
                    return False
                off += 2 if m & 0x80 else 1
            layer = _at(p, off)
            if layer is None:
                return False
            return (layer >> 1) & 0x07 == 0
        return True
    if codec == fp.CODEC_AV1:
        return bool(p[0] & 0x08)  # aggregation header Z|Y|W W|N: N = new coded video sequence
    return False


def ref_red_primary(p: bytes) -> bytes | None:
    """RFC 2198 §3: 4-byte headers (F=1: PT, 14-bit offset, 10-bit length), a 1-byte final one."""
    i = data = 0
    while i < len(p) and p[i] & 0x80:
        if i + 4 > len(p):
            return None
        data += ((p[i + 2] & 0x03) << 8) | p[i + 3]
        i += 4
    if i >= len(p):
        return None
    i += 1
    if i + data > len(p):
        return None
    return p[i + data :]


def ref_red_rewrite(p: bytes, src: int, dst: int) -> bytes:
    out = bytearray(p)
    i = 0
    while i < len(out):
        if out[i] & 0x7F == src:
            out[i] = (out[i] & 0x80) | (dst & 0x7F)
        if not out[i] & 0x80:
            break
        i += 4
    return bytes(out)


def check(data: bytes) -> None:
    if not data:
        return
    head, payload = data[0], data[1:]
    codec = CODECS[head % len(CODECS)]
    got = fp.sniff_keyframe_py(payload, codec)
    assert got == ref_keyframe(payload, codec), (codec, payload.hex(), got)
    assert fp.red_primary_py(payload) == ref_red_primary(payload)
    src, dst = head & 0x7F, (head * 37) & 0x7F
    assert fp.red_rewrite_pts_py(payload, src, dst) == ref_red_rewrite(payload, src, dst)


if __name__ == "__main__":
    main(check)
