"""Testing helpers for sfu and for other projects' integration tests.

- `PacketPublisher`, `PacketViewer`: packet-level WHIP/WHEP clients (standards only; any server);
- `FilePublisher`: publishes a media file's encoded frames (needs the `media` extra, PyAV);
- `wait_until` / `await_until`: conditions with deadlines; `FakeClock`; `Link` (seeded netem);
- `sfu.testing.plugin`: the pytest plugin (fixtures `sfu_server`, `sfu_publisher`, ...), loaded
  through the `pytest11` entry point; see docs/embedding.md.

Names are imported on first use, so `import sfu.testing` (and loading the pytest plugin) does
not import aiohttp, PyAV or the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "PacketPublisher": "sfu.testing.publisher",
    "PacketViewer": "sfu.testing.viewer",
    "FilePublisher": "sfu.testing.file_publisher",
    "WhipWhepError": "sfu.testing._client",
    "WhipError": "sfu.testing._client",
    "WhepError": "sfu.testing._client",
    "EncodedFrame": "sfu.testing.depacketize",
    "DecodedFrame": "sfu.testing.frames",
    "wait_until": "sfu.testing.waiting",
    "await_until": "sfu.testing.waiting",
    "FakeClock": "sfu.testing.clock",
    "Link": "sfu.testing.netem",
}

__all__ = [
    "DecodedFrame", "EncodedFrame", "FakeClock", "FilePublisher", "Link", "PacketPublisher", "PacketViewer",
    "WhepError", "WhipError", "WhipWhepError", "await_until", "wait_until",
]
assert sorted(__all__) == sorted(_LAZY)

if TYPE_CHECKING:
    from sfu.testing._client import WhepError, WhipError, WhipWhepError
    from sfu.testing.clock import FakeClock
    from sfu.testing.depacketize import EncodedFrame
    from sfu.testing.file_publisher import FilePublisher
    from sfu.testing.frames import DecodedFrame
    from sfu.testing.netem import Link
    from sfu.testing.publisher import PacketPublisher
    from sfu.testing.viewer import PacketViewer
    from sfu.testing.waiting import await_until, wait_until


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sfu.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
