"""Every saved fuzz input replayed through its target's check (fuzz/fuzz_<target>.py `check`).

fuzz/crashes/<target>/ holds the inputs that once crashed a target (written by libFuzzer, kept after
the fix); fuzz/corpus/<target>/ the seed corpus. Each must now pass its target's check: a fixed bug
that comes back fails here, without atheris. Plus the named regressions the fuzzers found.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ = os.path.join(ROOT, "fuzz")
TARGETS = sorted(f[len("fuzz_") : -3] for f in os.listdir(FUZZ) if f.startswith("fuzz_") and f.endswith(".py"))


def _target(name: str):
    if FUZZ not in sys.path:
        sys.path.insert(0, FUZZ)  # the targets import `_common` as a sibling
    module = sys.modules.get(f"fuzz_{name}")
    if module is None:
        spec = importlib.util.spec_from_file_location(f"fuzz_{name}", os.path.join(FUZZ, f"fuzz_{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"fuzz_{name}"] = module
        spec.loader.exec_module(module)
    return module


def _inputs(kind: str) -> list[tuple[str, str]]:
    out = []
    for name in TARGETS:
        d = os.path.join(FUZZ, kind, name)
        if os.path.isdir(d):
            out += [(name, os.path.join(d, f)) for f in sorted(os.listdir(d)) if not f.startswith(".")]
    return out


CRASHES = _inputs("crashes")


def test_every_target_has_a_seed_corpus():
    assert TARGETS, "no fuzz targets found"
    for name in TARGETS:
        d = os.path.join(FUZZ, "corpus", name)
        assert os.path.isdir(d) and os.listdir(d), f"fuzz/corpus/{name}/ is empty"


@pytest.mark.parametrize("name,path", CRASHES, ids=[f"{n}/{os.path.basename(p)}" for n, p in CRASHES])
def test_saved_crash_input_passes(name, path):
    with open(path, "rb") as f:
        _target(name).check(f.read())


@pytest.mark.parametrize("name", TARGETS)
def test_seed_corpus_passes(name):
    d = os.path.join(FUZZ, "corpus", name)
    check = _target(name).check
    for f in sorted(os.listdir(d)):
        with open(os.path.join(d, f), "rb") as fh:
            check(fh.read())


# ---- the bugs the fuzzers found, stated directly ---------------------------------------------------


def test_token_with_non_utf8_bytes_is_unauthorized():
    """fuzz_tokens: aiohttp keeps a header's non-UTF-8 bytes as surrogates; PyJWT's encode of them
    raised UnicodeEncodeError, a 500 instead of a 401."""
    from sfu import tokens
    from sfu.errors import Unauthorized

    header = b"Bearer eyJhbGciOiJIUzI1NiJ9.\xb3\xbb.x".decode("utf-8", "surrogateescape")
    with pytest.raises(Unauthorized):
        tokens.verify(b"k" * 32, tokens.parse_authorization(header), "s", tokens.PUBLISH, now=0)


def test_vp8_picture_id_cut_short_leaves_the_padding_alone():
    """fuzz_router's check (its viewer-side oracle): a VP8 descriptor whose 15-bit picture id ends
    with the payload (then one byte of RTP padding), forwarded after a layer switch (a picture id
    offset in force), had its second picture id byte written over the padding count: the viewer got
    an RTP packet with a padding count of 97 in a 4-byte payload. Now a cut-short picture id is left
    as it is (sfu/_layers.pxi vp8_picture_fields / vp9_picture_fields)."""
    import struct

    def chunk(b: bytes) -> bytes:
        return struct.pack("!H", len(b)) + b

    def key(seq: int, pic: int) -> bytes:  # VP8 key frame start, 7-bit picture id `pic`
        return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 0) + bytes(
            [0x90, 0x80, pic, 0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01])

    # X, I, then M set (15-bit picture id) and the payload ends: one byte of padding follows
    cut = struct.pack("!BBHII", 0xA0, 96, 51, 51 * 3000, 0) + bytes([0x80, 0x80, 0x80, 0x01])
    # fuzz_router program: inject into the low layer (pic 100), switch the viewer to the high
    # layer, inject its key frame (pic 5: an offset of 96), then the cut-short packet
    program = (bytes([4 | 8, 1]) + chunk(key(1, 100)) + bytes([6 | 0x10, 1])
               + bytes([4 | 8 | 0x10, 1]) + chunk(key(50, 5)) + bytes([4 | 8 | 0x10, 1]) + chunk(cut))
    _target("router").check(program)
