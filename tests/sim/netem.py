"""The seeded network emulator now lives in `sfu.testing.netem` (other projects' tests use it too)."""

from sfu.testing.netem import Link

__all__ = ["Link"]
