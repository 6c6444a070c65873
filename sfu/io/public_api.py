"""Public JSON for the pages: which streams are live, how many watch, which layers they offer.

    GET /api/streams         -> {"streams": [{name, live, viewers, audio, video, layers: [...]}, ...]}  (live only)
    GET /api/streams/{name}  -> {name, live, viewers, audio, video, layers}  (live: false when not live)

Each layer: `rid` ("video" for a stream without simulcast), `simulcast`, `codec`, `width`, `height`,
`bitrate_bps` (as measured by the server) and `viewers` (how many viewers get it). No session ids,
handles, participants or addresses (`sfu.core.public_view`). Answers carry `Cache-Control: no-store`.
The watch page polls the second one to know live / ended and the viewer count; the index lists the
first. Admin data stays in `/api/stats`.
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from ..core.public_view import PublicView

STREAM_NAME = re.compile(r"[A-Za-z0-9._~-]{1,128}")  # as sfu.io.http
NO_STORE = {"Cache-Control": "no-store"}


def add_public_routes(app: web.Application, manager) -> None:
    """Add the public JSON routes to `app`, reading `manager` (a `SessionManager`)."""
    view = PublicView(manager)

    def now() -> float:
        return asyncio.get_running_loop().time()

    async def streams(request: web.Request) -> web.Response:
        return web.json_response({"streams": view.live_streams(now())}, headers=NO_STORE)

    async def stream(request: web.Request) -> web.Response:
        name = request.match_info["stream"]
        if not STREAM_NAME.fullmatch(name):
            raise web.HTTPBadRequest(text="stream name must be 1-128 of A-Z a-z 0-9 . _ ~ -")
        return web.json_response(view.stream(name, now()), headers=NO_STORE)

    app.router.add_get("/api/streams", streams)
    app.router.add_get("/api/streams/{stream}", stream)


__all__ = ["add_public_routes"]
