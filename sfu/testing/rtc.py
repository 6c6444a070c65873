"""Packet-level WebRTC clients (no decoding) for tests and the load tester.

`PacketPublisher` pushes synthetic VP8/H.264 + Opus RTP over WHIP; `PacketViewer` pulls
over WHEP and measures what arrives. Both speak only standard WHIP/WHEP + ICE/DTLS/SRTP,
so they drive any server, not only sfu.
"""

from sfu.testing._client import WhepError, WhipError, WhipWhepError
from sfu.testing.publisher import PacketPublisher
from sfu.testing.viewer import PacketViewer

__all__ = ["PacketPublisher", "PacketViewer", "WhepError", "WhipError", "WhipWhepError"]
