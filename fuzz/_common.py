"""Shared plumbing of the fuzz targets (fuzz/fuzz_*.py).

Each target module defines `check(data: bytes) -> None`: it feeds `data` to one parser and raises
only when the parser misbehaves (an exception other than its documented error types, or a broken
invariant; a process crash speaks for itself). `main(check)` hands `check` to atheris (libFuzzer
driven by coverage); `tests/unit/test_fuzz_regressions.py` calls the same `check` on every saved input.

Coverage: `instrumented(__name__)` wraps a target's imports in `atheris.instrument_imports()` when
the target runs as a fuzzer, so the Python modules it imports (the project's parsers and the
libraries under them) report edge coverage to libFuzzer. Compiled code (the Cython fast path,
OpenSSL) is not instrumented: for those targets coverage comes from the Python harness and from
the outputs the harness branches on, and the oracle is a crash, an unexpected exception or a
disagreement with a Python reference.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from collections.abc import Callable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python fuzz/fuzz_x.py` puts fuzz/ first, not the repository
    sys.path.insert(0, ROOT)


@contextlib.contextmanager
def instrumented(module_name: str) -> Iterator[None]:
    """Instrument the imports of the `with` body for coverage, only when fuzzing (`__main__`)."""
    if module_name != "__main__":
        yield
        return
    import atheris

    with atheris.instrument_imports(include=["sfu", "aioice", "jwt"]):
        yield


class Reader:
    """Bytes to harness decisions, deterministically: a small FuzzedDataProvider that also runs
    without atheris (the regression tests replay inputs without it)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        return (self.byte() << 8) | self.byte()

    def u32(self) -> int:
        return (self.u16() << 16) | self.u16()

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def chunk(self) -> bytes:
        """A length-prefixed (u16) piece, cut short by the end of the input."""
        return self.take(self.u16())

    def rest(self) -> bytes:
        return self.take(self.left())


def _instrument_harness(atheris: object) -> None:
    """Instrument the target's own functions and methods too (its references and branches on the
    outputs of compiled code): the only coverage signal the Cython targets have."""
    module = sys.modules["__main__"]
    for name, obj in list(vars(module).items()):
        if isinstance(obj, types.FunctionType) and obj.__module__ == "__main__":
            setattr(module, name, atheris.instrument_func(obj))  # type: ignore[attr-defined]
        elif isinstance(obj, type) and obj.__module__ == "__main__":
            for attr, fn in list(vars(obj).items()):
                if isinstance(fn, types.FunctionType):
                    setattr(obj, attr, atheris.instrument_func(fn))  # type: ignore[attr-defined]


def main(check: Callable[[bytes], None]) -> None:
    """Run `check` under atheris with the libFuzzer flags on the command line (see fuzz/run.py)."""
    import atheris

    _instrument_harness(atheris)
    atheris.Setup(sys.argv, getattr(sys.modules["__main__"], "check", check))
    atheris.Fuzz()
