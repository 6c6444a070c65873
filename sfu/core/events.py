"""Lifecycle events the core reports, for the shell to act on (webhooks: `sfu.io.webhooks`).

The session manager appends them as things happen (`SessionManager.take_events()` hands them over);
it never calls out. `now` is the manager's clock (the event loop's monotonic time); `session` is the
session's public id (`sfu.core.sessions.public_id`), never the secret session id.

`EventOutbox` is bounded: when nobody drains it (no webhooks configured) the oldest are dropped and
counted, so it never grows without limit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

OUTBOX_MAX = 4096  # events kept for the shell between two drains


@dataclass(frozen=True)
class Event:
    now: float
    stream: str

    type = "event"  # the webhook's event type


@dataclass(frozen=True)
class StreamStarted(Event):
    """A publisher made the stream live (its WHIP session was created)."""

    type = "stream.started"


@dataclass(frozen=True)
class StreamEnded(Event):
    """The stream has no publisher any more."""

    type = "stream.ended"


@dataclass(frozen=True)
class PublisherConnected(Event):
    session: str = ""
    type = "publisher.connected"  # DTLS is up: media can flow


@dataclass(frozen=True)
class PublisherDisconnected(Event):
    session: str = ""
    reason: str = ""
    type = "publisher.disconnected"


@dataclass(frozen=True)
class ViewerJoined(Event):
    session: str = ""
    type = "viewer.joined"  # the WHEP session was created


@dataclass(frozen=True)
class ViewerLeft(Event):
    session: str = ""
    reason: str = ""
    type = "viewer.left"


@dataclass(frozen=True)
class RecordingReady(Event):
    """A recording of the stream can be fetched (for a recorder to report; none emits it yet)."""

    location: str = ""
    type = "recording.ready"


@dataclass(frozen=True)
class DrainStarted(Event):
    """The node stopped taking new sessions (`sfu.io.drain`; `stream` is "")."""

    reason: str = ""
    type = "drain.started"


VIEWER_EVENTS = (ViewerJoined, ViewerLeft)


class EventOutbox:
    """A bounded FIFO of events: `emit` appends (dropping and counting the oldest when full), `take`
    empties it."""

    def __init__(self, limit: int = OUTBOX_MAX) -> None:
        self._events: deque[Event] = deque()
        self.limit = limit
        self.dropped = 0

    def emit(self, event: Event) -> None:
        if len(self._events) >= self.limit:
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)

    def take(self) -> list[Event]:
        out = list(self._events)
        self._events.clear()
        return out

    def __len__(self) -> int:
        return len(self._events)
