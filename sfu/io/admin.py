"""The operator's side of the HTTP server: the admin credential, the admin API, drain and readiness.

`install(app, ops, api, registry)` (called by `sfu.io.http.build_app`) adds:

- a middleware (inside the error middleware, so refusals are counted like any other) that requires a
  token with the admin capability (`sfu token --admin`) for `/admin/...`, `/api/stats` and
  `/metrics`; refuses new WHIP/WHEP sessions while the node drains (503 + Retry-After); and
  remembers which token created each session, so revoking a token id ends its sessions;
- `/readyz` (200 while taking new sessions, 503 while draining) and the JSON admin API under
  `/admin/` (docs/admin.md). Sessions are named by their public id (`sfu.core.sessions.public_id`),
  never by the secret session id in their URL. Every admin action is logged with the admin token's
  participant id (`sub`) and counted in `sfu_admin_actions_total{action}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import unquote

import jwt
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..errors import BadRequest, NotFound, Overloaded, SfuError
from ..keys import ADMIN, KeySet
from ..logging_setup import access_middleware
from ..tokens import parse_authorization
from .drain import Drain

log = logging.getLogger("sfu.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ADMIN_PATHS = ("/admin/", "/api/stats", "/metrics")
DEFAULT_PAGE = 100
MAX_PAGE = 1000
OPS_KEY: web.AppKey[Ops] = web.AppKey("sfu_ops")


class AdminApi(Protocol):
    """What the admin API needs from the session manager (`sfu.core.sessions.SessionManager`)."""

    sessions: dict[str, Any]
    streams: dict[str, Any]

    def stats(self) -> dict[str, object]: ...
    def session_summary(self, session: Any) -> dict[str, object]: ...
    def session_by_public_id(self, handle: str) -> Any: ...
    def end_session(self, session: Any, reason: str) -> None: ...
    def end_stream(self, name: str, reason: str) -> int: ...
    def close_all(self, reason: str) -> None: ...


class Ops:
    """Shared by the HTTP app and the server: the key set, the drain state and which token id
    created each live session (secret session id -> jti)."""

    def __init__(self, keys: KeySet, drain: Drain) -> None:
        self.keys = keys
        self.drain = drain
        self.token_of_session: dict[str, str] = {}

    def forget_ended(self, live: dict[str, Any]) -> None:
        for sid in [sid for sid in self.token_of_session if sid not in live]:
            del self.token_of_session[sid]


def _refuse(cls: type[SfuError], reason: str, label: str, retry_after: int | None = None) -> SfuError:
    error = cls(reason, retry_after=retry_after)
    error.metric_reason = label  # type: ignore[attr-defined]
    return error


def _token_id(token: str | None) -> str | None:
    """The `jti` of a token the request handler has already verified."""
    if not token:
        return None
    try:
        value = jwt.decode(token, options={"verify_signature": False}).get("jti")
    except (jwt.InvalidTokenError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _is_session_post(request: web.Request) -> bool:
    parts = request.path.split("/")
    return request.method == "POST" and len(parts) == 3 and parts[1] in ("whip", "whep")


def install(app: web.Application, ops: Ops, api: AdminApi, registry: CollectorRegistry) -> None:
    actions = Counter("sfu_admin_actions", "Admin API actions, by action", ["action"], registry=registry)
    draining = Gauge("sfu_draining", "1 while the node drains (takes no new sessions), else 0", registry=registry)
    draining.set_function(lambda: 1.0 if ops.drain.draining else 0.0)
    app[OPS_KEY] = ops

    def admin_of(request: web.Request) -> str:
        """The admin token's participant id; raises 401 / 403."""
        token = parse_authorization(request.headers.get("Authorization"))
        return ops.keys.verify(token, "*", ADMIN).sub

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if request.method != "OPTIONS" and path.startswith(ADMIN_PATHS):
            who = admin_of(request)  # the handlers ask again for the name (a cached verification)
            if request.method == "GET":  # reads (a dashboard polls): DEBUG; changes are logged by audit()
                log.debug("admin read %s by %s", path, who, extra={"admin": who})
        elif _is_session_post(request) and ops.drain.draining:
            raise _refuse(Overloaded, "this node is draining and takes no new sessions", "draining",
                          retry_after=ops.drain.retry_after())
        response = await handler(request)
        if response.status == 201 and _is_session_post(request):
            jti = _token_id(parse_authorization(request.headers.get("Authorization")))
            location = response.headers.get("Location", "")
            if jti and location:
                ops.token_of_session[unquote(location.rsplit("/", 1)[1])] = jti
                if len(ops.token_of_session) > 2 * len(api.sessions) + 1024:  # forget ended sessions
                    ops.forget_ended(api.sessions)
        return response

    app.middlewares.append(guard)
    app.middlewares.insert(0, access_middleware)  # outermost: sees every final status (sfu/logging_setup.py)

    def audit(request: web.Request, action: str, **fields: object) -> None:
        actions.labels(action=action).inc()
        log.info("admin %s by %s: %s", action, admin_of(request),
                 ", ".join(f"{k}={v}" for k, v in fields.items()) or "-",
                 extra={"admin": admin_of(request), "action": action, **{f"admin_{k}": v for k, v in fields.items()}})

    def page_args(request: web.Request) -> tuple[int, str]:
        try:
            limit = int(request.query.get("limit", DEFAULT_PAGE))
        except ValueError:
            raise _refuse(BadRequest, "limit must be an integer", "bad_admin_request") from None
        if not 1 <= limit <= MAX_PAGE:
            raise _refuse(BadRequest, f"limit must be 1-{MAX_PAGE}", "bad_admin_request")
        return limit, request.query.get("after", "")

    def paged(items: list[dict[str, object]], key: str, limit: int, after: str) -> tuple[list[dict[str, object]], Any]:
        items = sorted((i for i in items if str(i[key]) > after), key=lambda i: str(i[key]))
        page = items[:limit]
        return page, (page[-1][key] if len(items) > limit else None)

    def stream_summary(name: str, st: Any) -> dict[str, object]:
        return {
            "name": name,
            "live": st.live,
            "publisher": st.publisher.handle if st.publisher is not None else None,
            "viewers": len(st.viewers),
        }

    async def readyz(request: web.Request) -> web.Response:
        if ops.drain.draining:
            return web.Response(status=503, text="draining", headers={"Retry-After": str(ops.drain.retry_after())})
        return web.Response(text="ready")

    async def list_streams(request: web.Request) -> web.Response:
        limit, after = page_args(request)
        items = [stream_summary(name, st) for name, st in list(api.streams.items())]
        page, following = paged(items, "name", limit, after)
        return web.json_response({"streams": page, "next": following})

    async def stream_detail(request: web.Request) -> web.Response:
        name = request.match_info["stream"]
        st = api.streams.get(name)
        if st is None:
            raise _refuse(NotFound, "no such stream", "not_found")
        detail = dict(api.stats()["streams"].get(name, {}))  # type: ignore[attr-defined]
        detail.update(stream_summary(name, st))
        members = ([st.publisher] if st.publisher is not None else []) + sorted(st.viewers, key=lambda s: s.handle)
        detail["sessions"] = [api.session_summary(s) for s in members]
        return web.json_response(detail)

    async def end_stream(request: web.Request) -> web.Response:
        name = request.match_info["stream"]
        if name not in api.streams:
            raise _refuse(NotFound, "no such stream", "not_found")
        ended = api.end_stream(name, f"ended by admin {admin_of(request)}")
        audit(request, "end_stream", stream=name, sessions=ended)
        return web.json_response({"stream": name, "ended": ended})

    async def list_sessions(request: web.Request) -> web.Response:
        limit, after = page_args(request)
        stream = request.query.get("stream")
        items = [api.session_summary(s) for s in list(api.sessions.values()) if stream is None or s.stream.name == stream]
        page, following = paged(items, "id", limit, after)
        return web.json_response({"sessions": page, "next": following})

    async def end_session(request: web.Request) -> web.Response:
        handle = request.match_info["session"]
        session = api.session_by_public_id(handle)
        if session is None:
            raise _refuse(NotFound, "no such session", "not_found")
        api.end_session(session, f"ended by admin {admin_of(request)}")
        audit(request, "end_session", session=handle, stream=session.stream.name)
        return web.json_response({"ended": handle})

    async def read_json(request: web.Request) -> dict[str, Any]:
        text = await request.text() if request.can_read_body else ""
        if len(text) > 4096:
            raise _refuse(BadRequest, "body too large", "bad_admin_request")
        try:
            body = json.loads(text) if text.strip() else {}
        except ValueError:
            raise _refuse(BadRequest, "body is not JSON", "bad_json") from None
        if not isinstance(body, dict):
            raise _refuse(BadRequest, "expected a JSON object", "bad_admin_request")
        return body

    async def revoke(request: web.Request) -> web.Response:
        body = await read_json(request)
        participant, token_id = body.get("participant"), body.get("token_id")
        if set(body) - {"participant", "token_id"} or not (participant or token_id) or not all(
            v is None or (isinstance(v, str) and 0 < len(v) <= 256) for v in (participant, token_id)
        ):
            raise _refuse(BadRequest, 'expected {"participant": id} and/or {"token_id": jti}', "bad_admin_request")
        ops.keys.revocations.revoke(token_id=token_id, participant=participant)
        ops.forget_ended(api.sessions)
        doomed = [
            s for sid, s in list(api.sessions.items())
            if (participant is not None and s.participant == participant)
            or (token_id is not None and ops.token_of_session.get(sid) == token_id)
        ]
        for session in doomed:
            api.end_session(session, f"token revoked by admin {admin_of(request)}")
        audit(request, "revoke", participant=participant, token_id=token_id, sessions=len(doomed))
        return web.json_response({"participant": participant, "token_id": token_id, "ended": [s.handle for s in doomed]})

    async def revocations(request: web.Request) -> web.Response:
        return web.json_response(ops.keys.revocations.snapshot())

    async def drain(request: web.Request) -> web.Response:
        body = await read_json(request)
        deadline = body.get("deadline_s")
        if set(body) - {"deadline_s"} or not (
            deadline is None or (isinstance(deadline, int | float) and not isinstance(deadline, bool) and 0 <= deadline <= 86400)
        ):
            raise _refuse(BadRequest, 'expected {"deadline_s": seconds (0-86400)} or an empty body', "bad_admin_request")
        started = ops.drain.start(api, deadline, reason=f"admin {admin_of(request)}")
        audit(request, "drain", deadline_s=deadline if deadline is not None else ops.drain.default_deadline_s,
              started=started)
        return web.json_response({"draining": True, "already": not started,
                                  "retry_after_s": ops.drain.retry_after()}, status=202)

    app.router.add_get("/readyz", readyz)
    app.router.add_get("/admin/streams", list_streams)
    app.router.add_get("/admin/streams/{stream}", stream_detail)
    app.router.add_delete("/admin/streams/{stream}", end_stream)
    app.router.add_get("/admin/sessions", list_sessions)
    app.router.add_delete("/admin/sessions/{session}", end_session)
    app.router.add_post("/admin/revoke", revoke)
    app.router.add_get("/admin/revocations", revocations)
    app.router.add_post("/admin/drain", drain)


__all__ = ["ADMIN_PATHS", "OPS_KEY", "AdminApi", "Ops", "install"]
