"""What the HTTP layer calls: the session manager's signalling surface, free of HTTP.

`sfu.io.http` validates the request (route, media type, size, encoding, token) and then calls one
method here; the implementation makes every protocol decision. Errors are `sfu.errors.SfuError`
subclasses, which the HTTP layer turns into their status (`Conflict` / `Overloaded` with
`retry_after` become 409 / 503 + Retry-After).

`kind` is "whip" (a publisher session) or "whep" (a viewer session). ETags travel without quotes in
both directions: `If-Match: "abc"` arrives as `"abc"` -> `abc`, `*` as `*`; a weak tag (`W/"abc"`)
is passed as written and so never matches (RFC 9110 §13.1.1 uses the strong comparison).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from ..errors import SfuError

Kind = Literal["whip", "whep"]


@dataclass(frozen=True)
class Created:
    """A new session: the HTTP layer answers 201 with `answer_sdp`, a Location for `session_id`."""

    session_id: str  # a URL path segment: unreserved characters only, unguessable
    answer_sdp: str
    etag: str  # without quotes


@dataclass(frozen=True)
class Patched:
    """A PATCH result: `answer_fragment` None -> 204 (trickle), else 200 with the sdpfrag (ICE restart)."""

    etag: str  # without quotes; the session's current ETag
    answer_fragment: str | None


class SessionApi(Protocol):
    async def publish(self, stream: str, offer_sdp: str, participant: str | None) -> Created:
        """WHIP POST: raises BadRequest / Unprocessable (SDP), Conflict (stream already published) or
        Overloaded (limits)."""
        ...

    def admit_viewer(self, stream: str) -> float | None:
        """WHEP POST, first step: raises Overloaded, or Conflict + retry_after for a stream that is
        not live. None: go on with `view`. A number: the stream is not live and the request may wait
        that many seconds for a publisher (`add_live_listener` names the stream when one comes), then
        `view`; after the whole wait it is answered with `live_wait_expired(stream)`."""
        ...

    def live_wait_expired(self, stream: str) -> SfuError:
        """The error (a 409 Conflict + retry_after) for a WHEP request whose wait ran out."""
        ...

    def add_live_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(stream)` whenever a stream goes live (a publisher's session was created)."""
        ...

    async def view(self, stream: str, offer_sdp: str, participant: str | None, options: Mapping[str, str],
                   *, source: str | None = None) -> Created:
        """WHEP POST, second step (after `admit_viewer` and any wait); `options` are the query
        parameters (e.g. `layer=`, `max_height=`); `source` the client's address (None: unknown).
        Raises Conflict + retry_after for a stream that is not live (any more), Overloaded +
        retry_after at the bound on sessions not connected yet, BadRequest / Unprocessable."""
        ...

    async def delete(self, kind: str, stream: str, session_id: str) -> bool:
        """End a session; False if it was unknown or already ended (the HTTP answer: 404)."""
        ...

    async def patch(self, kind: str, stream: str, session_id: str, fragment: str, if_match: str | None) -> Patched:
        """Trickle or ICE restart (RFC 8840 sdpfrag). Raises NotFound / PreconditionFailed / BadRequest."""
        ...

    async def set_layer(self, stream: str, session_id: str, request: Mapping[str, object]) -> dict[str, object]:
        """A WHEP viewer's layer choice during the session: `{"layer": rid}`, `{"max_height": px}`,
        `{"paused": bool}` (any combination; keys left out are cleared, `{}` is automatic). Returns the
        viewer's layer state. Raises NotFound / BadRequest."""
        ...

    def session_exists(self, kind: str, stream: str, session_id: str) -> bool:
        """Cheap check so the HTTP layer answers 404 before reading a PATCH body."""
        ...

    def stats(self) -> dict[str, object]:
        """JSON-able snapshot served at GET /api/stats."""
        ...
