"""Testing helpers: packet-level WHIP/WHEP clients (see `sfu.testing.rtc`)."""

from sfu.testing.rtc import PacketPublisher, PacketViewer, WhepError, WhipError, WhipWhepError

__all__ = ["PacketPublisher", "PacketViewer", "WhepError", "WhipError", "WhipWhepError"]
