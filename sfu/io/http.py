"""The HTTP face of the server: WHIP (RFC 9725) and WHEP endpoints, health, metrics, stats, web pages.

No protocol decisions here. Each request is validated (stream name, token, media type, size,
encoding) and handed to a `SessionApi`; `SfuError`s become their status with a `text/plain` reason
and `Retry-After` when set. A WHEP POST for a stream that is not live is held open here
(`LiveWaiters`) when and for as long as the session manager says. What real clients need (DESIGN.md
"Interop rules"): exactly 201 with an absolute Location and a quoted strong ETag on success;
`application/sdp` accepted with parameters; `Authorization` with or without `Bearer `; DELETE
200, then 404 once the session is gone (RFC 9725 §4.3); 415 for a wrong media type; never 406 on WHEP; CORS on every response so browser pages
on other origins can publish and watch.

Every response is counted by route and status (`sfu_http_responses_total`), every rejected request by
reason (`sfu_http_rejected_total`). No malformed request gets a 5xx: a body that cannot be decoded, JSON
with NaN/Infinity, a bad `Host`, a page path with a NUL byte are 400/404 with a reason; a client that
goes away mid-request is counted as `client_gone` (status 499 in the response counter, nothing sent),
not logged as an error.

`Location` (RFC 9725 §4.2) is `public_url` + path when `public_url` is configured; otherwise it is
built from the request's `Host` if that is a valid `host[:port]` (RFC 9110 §7.2: a DNS name, an IPv4
address or a bracketed IPv6 address, a port up to 65535; anything else is 400), or from the local
address the request arrived on when there is no `Host` (HTTP/1.0).
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from ..config import Config, resolve_token_secret
from ..errors import (
    BadRequest,
    ClientGone,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    SfuError,
    UnsupportedMediaType,
)
from ..keys import KeySet, Revoked
from ..publish_keys import looks_like_key
from ..tokens import PUBLISH, SUBSCRIBE, parse_authorization
from .admin import PUBLISH_KEY_PARTICIPANT, Ops, install as install_ops
from .drain import Drain
from .live_wait import LiveWaiters
from .public_api import add_public_routes
from ..core.session_api import Created, SessionApi

log = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"  # RFC 8840
LAYER_KEYS = frozenset({"layer", "max_height", "paused", "video"})  # POST .../layer body
STREAM_NAME = re.compile(r"[A-Za-z0-9._~-]{1,128}")
DOT_SEGMENTS = frozenset({".", ".."})  # RFC 3986 §5.2.4 removes them: a Location with one cannot be DELETEd
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")  # DNS names and IPv4 (`_` tolerated: container names)
HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]{2,45}\]|[^:\[\]]{1,253})(?::([0-9]{1,5}))?")
PAGE_PATH = re.compile(r"(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}/){0,8}[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
READ_CHUNK_BYTES = 16384
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
WEB_SUFFIXES = frozenset({".html", ".js", ".mjs", ".css", ".svg", ".png", ".ico", ".json", ".map", ".webmanifest"})

ALLOW_METHODS = "OPTIONS, POST, PATCH, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type, If-Match"
EXPOSE_HEADERS = "Location, ETag, Link, Accept-Patch, Retry-After"

CONFIG_KEY = web.AppKey("sfu_config", Config)
API_KEY = web.AppKey("sfu_session_api", SessionApi)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ice_server_links(ice_servers: list[dict[str, object]]) -> list[str]:
    """One `Link` value per ICE server URL (RFC 9725 §4.6), credentials as quoted strings."""
    links = []
    for server in ice_servers:
        urls = server["urls"]
        for url in [urls] if isinstance(urls, str) else list(urls):  # type: ignore[call-overload]
            value = f'<{url}>; rel="ice-server"'
            if "username" in server:
                value += f'; username="{_quoted(str(server["username"]))}"'
                value += f'; credential="{_quoted(str(server["credential"]))}"; credential-type="password"'
            links.append(value)
    return links


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _rejection(cls: type[SfuError], reason: str, label: str) -> SfuError:
    """An error raised by this module, with its own label for `sfu_http_rejected_total`."""
    error = cls(reason)
    error.metric_reason = label  # type: ignore[attr-defined]
    return error


def valid_host(value: str) -> bool:
    """`value` is a `Host` header of the form host[:port] (see the module docstring)."""
    m = HOST_PORT.fullmatch(value)
    if m is None:
        return False
    host, port = m.groups()
    if port is not None and not 0 < int(port) <= 65535:
        return False
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return HOST_NAME.fullmatch(host) is not None


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")  # RFC 8259 §6: no NaN or Infinity


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise ValueError(f"number {text} is out of range")
    return value


def client_gone(request: web.Request) -> bool:
    """The connection the request came on is closed or closing: nobody is left to answer."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name.removeprefix("HTTP")).lower()


def build_app(
    config: Config,
    api: SessionApi,
    metrics_registry: CollectorRegistry | None = None,
    *,
    token_secret: str | None = None,
    web_dir: Path | None = None,
    ops: Ops | None = None,
) -> web.Application:
    """The aiohttp application. `token_secret` defaults to `resolve_token_secret(config)`; `web_dir`
    to the package's `sfu/web/`. A registry of None gets a private one (so apps can coexist in tests).
    `ops` (the key set, the drain state) defaults to keys from the secret and `config.token_keys`."""
    registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
    secret = token_secret if token_secret is not None else resolve_token_secret(config)[0]
    pages = web_dir if web_dir is not None else WEB_DIR
    if ops is None:
        ops = Ops(KeySet.from_config(secret, config.token_keys), Drain(config.drain_timeout))
    keys = ops.keys
    responses = Counter(
        "sfu_http_responses", "HTTP responses by route and status", ["route", "status"], registry=registry
    )
    rejected = Counter("sfu_http_rejected", "HTTP requests rejected, by reason", ["reason"], registry=registry)
    links = ice_server_links(config.ice_servers)
    live = LiveWaiters()  # WHEP requests held open for a publisher (whep_wait_for_publisher)
    api.add_live_listener(live.went_live)

    # -- cross-cutting: errors, CORS, counting -------------------------------------------------

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as e:  # aiohttp's own: no route (404), method not allowed (405)...
            if e.status >= 400:
                rejected.labels(reason=_snake(type(e).__name__)).inc()
            raise
        except SfuError as e:
            rejected.labels(reason=getattr(e, "metric_reason", None) or _snake(type(e).__name__)).inc()
            return _error_response(request, e)
        except Exception as e:
            if isinstance(e, ConnectionError) and client_gone(request):
                rejected.labels(reason="client_gone").inc()
                return _error_response(request, ClientGone("client went away"))
            # the path is quoted by repr (a NUL or newline in it cannot forge log lines)
            log.exception("unhandled error in %s %r", request.method, request.path)
            rejected.labels(reason="internal_error").inc()
            return web.Response(status=500, text="internal server error")

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("Access-Control-Allow-Origin", config.cors_origin)
        response.headers.setdefault("Access-Control-Expose-Headers", EXPOSE_HEADERS)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        responses.labels(route=route, status=str(response.status)).inc()

    def _error_response(request: web.Request, e: SfuError) -> web.Response:
        status = e.status
        if status == 406 and request.path.startswith("/whep/"):
            status = 422  # WHEP: 406 announces a counter-offer, never an error
        headers = {}
        if e.retry_after is not None:
            headers["Retry-After"] = str(int(e.retry_after))
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="sfu"'  # RFC 6750 §3
        return web.Response(status=status, text=e.reason, headers=headers)

    # -- request checks --------------------------------------------------------------------------

    def stream_of(request: web.Request) -> str:
        stream = request.match_info["stream"]
        if not STREAM_NAME.fullmatch(stream):
            raise _rejection(BadRequest, "stream name must be 1-128 of A-Z a-z 0-9 . _ ~ -", "bad_stream_name")
        if stream in DOT_SEGMENTS:
            raise _rejection(BadRequest, "stream name must not be . or ..", "bad_stream_name")
        return stream

    def authorize(request: web.Request, kind: str, stream: str) -> str | None:
        """The participant id from the token, or None where no token is needed and none is valid."""
        token = parse_authorization(request.headers.get("Authorization"))
        capability = PUBLISH if kind == "whip" else SUBSCRIBE
        if kind == "whip" and looks_like_key(token):  # an encoder's long-lived publish key
            assert token is not None
            return PUBLISH_KEY_PARTICIPANT + ops.publish_keys.verify(token, stream).id
        if kind == "whip" or config.viewer_token_required:
            return keys.verify(token, stream, capability).sub
        if token is None:
            return None
        try:  # an open stream: a token only names the participant, and a stale one is no reason to refuse
            return keys.verify(token, stream, capability).sub
        except Revoked:
            raise  # a revoked one is
        except SfuError:
            return None

    async def read_body(request: web.Request, media_type: str) -> str:
        mime = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if mime != media_type:
            raise _rejection(UnsupportedMediaType, f"Content-Type must be {media_type}", "unsupported_media_type")
        limit = config.max_body_bytes
        too_large = f"body larger than {limit} bytes"
        if request.content_length is not None and request.content_length > limit:
            raise _rejection(PayloadTooLarge, too_large, "body_too_large")
        body = bytearray()
        try:
            async with asyncio.timeout(config.http_body_timeout_s):  # a slow body holds a connection
                async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
                    body += chunk
                    if len(body) > limit:  # chunked uploads, a Content-Length that lied, a gzip bomb
                        raise _rejection(PayloadTooLarge, too_large, "body_too_large")
        except TimeoutError:
            raise _rejection(RequestTimeout, f"body not received within {config.http_body_timeout_s:g} s",
                             "body_timeout") from None
        except (web.RequestPayloadError, HttpProcessingError, ConnectionError) as e:
            # a corrupt Content-Encoding, a body shorter than its Content-Length, a bad chunk; or
            # the connection closed mid-body (aiohttp hands the reader ConnectionResetError)
            if client_gone(request):
                raise ClientGone("client went away mid-body") from None
            cause = e if isinstance(e, HttpProcessingError) else e.__cause__
            detail = cause.message if isinstance(cause, HttpProcessingError) else type(e).__name__
            raise _rejection(BadRequest, f"body could not be read: {detail}", "bad_body") from None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _rejection(BadRequest, "body is not UTF-8", "bad_encoding") from None
        if not text.strip():
            raise _rejection(BadRequest, "empty body", "empty_body")
        return text

    def base_url(request: web.Request) -> str:
        """Scheme and authority for `Location` (see the module docstring); checked before any work."""
        if config.public_url:
            return config.public_url.rstrip("/")
        hosts = request.headers.getall("Host", [])
        if len(hosts) > 1 or (hosts and not valid_host(hosts[0])):
            raise _rejection(BadRequest, "Host header must be one host[:port]", "bad_host")
        if hosts:
            return f"{request.scheme}://{hosts[0]}"
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not sockname:
            raise _rejection(BadRequest, "no Host header", "bad_host")
        host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
        return f"{request.scheme}://{host}:{sockname[1]}"

    def location(base: str, kind: str, stream: str, session_id: str) -> str:
        return f"{base}/{kind}/{stream}/{quote(session_id, safe='')}"

    def kind_of(request: web.Request) -> str:
        return request.path.split("/", 2)[1]  # the router matched /whip/... or /whep/...

    # -- WHIP / WHEP -------------------------------------------------------------------------------

    async def post(request: web.Request) -> web.Response:
        kind = kind_of(request)
        stream = stream_of(request)
        base = base_url(request)
        participant = authorize(request, kind, stream)
        offer = await read_body(request, SDP)
        created: Created
        if kind == "whip":
            created = await api.publish(stream, offer, participant)
        else:
            wait_s = api.admit_viewer(stream)
            if wait_s is not None and not await live.wait(stream, wait_s):
                raise api.live_wait_expired(stream)
            created = await api.view(stream, offer, participant, dict(request.query), source=request.remote)
        headers = CIMultiDict(
            {
                "Content-Type": SDP,
                "Location": location(base, kind, stream, created.session_id),
                "ETag": f'"{created.etag}"',
                "Accept-Patch": SDPFRAG,
            }
        )
        for link in links:
            headers.add("Link", link)
        return web.Response(status=201, body=created.answer_sdp.encode(), headers=headers)

    async def delete(request: web.Request) -> web.Response:
        kind = kind_of(request)
        stream = stream_of(request)
        authorize(request, kind, stream)
        if not await api.delete(kind, stream, request.match_info["session"]):
            # RFC 9725 §4.3: a session URL that is unknown, or already deleted, is 404
            raise _rejection(NotFound, "no such session", "not_found")
        return web.Response(status=200)

    async def patch(request: web.Request) -> web.Response:
        kind = kind_of(request)
        stream = stream_of(request)
        session_id = request.match_info["session"]
        authorize(request, kind, stream)
        if not api.session_exists(kind, stream, session_id):
            raise _rejection(NotFound, "no such session", "not_found")
        fragment = await read_body(request, SDPFRAG)
        result = await api.patch(kind, stream, session_id, fragment, _if_match(request.headers.get("If-Match")))
        headers = {"ETag": f'"{result.etag}"'}
        if result.answer_fragment is None:
            return web.Response(status=204, headers=headers)
        headers["Content-Type"] = SDPFRAG
        return web.Response(status=200, body=result.answer_fragment.encode(), headers=headers)

    async def layer(request: web.Request) -> web.Response:
        """POST /whep/{stream}/{session}/layer with JSON {"layer": rid} / {"max_height": px} /
        {"paused": bool}: the viewer's simulcast layer choice, changed during the session."""
        stream = stream_of(request)
        session_id = request.match_info["session"]
        authorize(request, "whep", stream)
        if not api.session_exists("whep", stream, session_id):
            raise _rejection(NotFound, "no such session", "not_found")
        text = await read_body(request, "application/json")
        try:
            body = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
        except ValueError as e:
            raise _rejection(BadRequest, f"body is not JSON: {e}", "bad_json") from None
        except RecursionError:
            raise _rejection(BadRequest, "body is not JSON: nested too deeply", "bad_json") from None
        if not isinstance(body, dict) or not set(body) <= LAYER_KEYS:
            raise _rejection(BadRequest, f"expected a JSON object with keys among {sorted(LAYER_KEYS)}", "bad_layer_request")
        return web.json_response(await api.set_layer(stream, session_id, body))

    def options_headers() -> CIMultiDict[str]:
        return CIMultiDict(
            {
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": "86400",
            }
        )

    async def options_collection(request: web.Request) -> web.Response:
        headers = options_headers()
        headers["Accept-Post"] = SDP
        for link in links:
            headers.add("Link", link)
        return web.Response(status=204, headers=headers)

    async def options_resource(request: web.Request) -> web.Response:
        headers = options_headers()
        headers["Accept-Patch"] = SDPFRAG
        return web.Response(status=204, headers=headers)

    # -- operations and pages ----------------------------------------------------------------------

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(api.stats())

    def page(relative: str) -> web.FileResponse:
        # Only plain names (no NUL, no dot segments or hidden files, bounded length) reach the file system.
        if not PAGE_PATH.fullmatch(relative):
            raise web.HTTPNotFound(text="not found")
        root = pages.resolve()
        try:
            target = (root / relative).resolve()
            found = target.is_relative_to(root) and target.suffix in WEB_SUFFIXES and target.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            raise web.HTTPNotFound(text="not found")
        return web.FileResponse(target)

    async def index(request: web.Request) -> web.StreamResponse:
        if (pages / "index.html").is_file():
            return page("index.html")
        items = "".join(
            f'<li><a href="{html.escape(p.name)}">{html.escape(p.stem)}</a></li>' for p in sorted(pages.glob("*.html"))
        )
        text = f"<!doctype html><title>sfu</title><h1>sfu</h1><ul>{items}</ul>"
        return web.Response(text=text, content_type="text/html")

    async def static(request: web.Request) -> web.StreamResponse:
        return page(request.match_info["path"])

    app = web.Application(middlewares=[errors])
    app[CONFIG_KEY] = config
    app[API_KEY] = api
    app.on_response_prepare.append(on_prepare)
    for kind in ("whip", "whep"):
        collection = app.router.add_resource(f"/{kind}/{{stream}}")
        collection.add_route("POST", post)
        collection.add_route("OPTIONS", options_collection)
        resource = app.router.add_resource(f"/{kind}/{{stream}}/{{session}}")
        resource.add_route("PATCH", patch)
        resource.add_route("DELETE", delete)
        resource.add_route("OPTIONS", options_resource)
    layer_resource = app.router.add_resource("/whep/{stream}/{session}/layer")
    layer_resource.add_route("POST", layer)
    layer_resource.add_route("OPTIONS", options_resource)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/stats", stats)
    add_public_routes(app, api)  # /api/streams: public JSON for the pages (sfu/io/public_api.py)
    app.router.add_get("/", index)
    app.router.add_get("/static/{path:.+}", static)
    # Pages at the root too, so relative links from the index ("watch.html") resolve.
    app.router.add_get(r"/{path:[A-Za-z0-9._-]+\.[a-z]+}", static)
    install_ops(app, ops, api, registry)  # admin credential, admin API, drain, /readyz (sfu/io/admin.py)
    return app


def _if_match(value: str | None) -> str | None:
    """`"abc"` -> `abc`; `*` and anything else (a weak tag, a list) as written."""
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"' and '"' not in value[1:-1]:
        return value[1:-1]
    return value


__all__ = ["API_KEY", "CONFIG_KEY", "SDP", "SDPFRAG", "build_app", "ice_server_links"]
