"""The WHIP/WHEP HTTP layer on a real loopback socket, in front of a fake session manager."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from sfu.config import Config
from sfu.errors import BadRequest, Conflict, NotFound, Overloaded, PreconditionFailed, SfuError, Unprocessable
from sfu.io.http import build_app
from sfu.keys import KeySet
from sfu.core.session_api import Created, Patched
from sfu.tokens import mint

SECRET = "h" * 32
OFFER = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
ANSWER = "v=0\r\no=sfu 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
TRICKLE = (
    "a=ice-ufrag:abcd\r\na=ice-pwd:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
    "a=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\n"
)
RESTART = "a=ice-ufrag:NEWU\r\na=ice-pwd:NEWPASSWORD\r\n"
SDP = {"Content-Type": "application/sdp"}
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}


class Teapot(SfuError):
    status = 406


class FakeApi:
    """Records calls; `fail` makes the next publish/view raise."""

    def __init__(self) -> None:
        self.sessions: dict[tuple[str, str, str], str] = {}  # (kind, stream, id) -> etag
        self.calls: list[tuple] = []
        self.fail: Exception | None = None
        self.counter = 0
        self.live_listeners: list[Callable[[str], None]] = []
        self.wait_s: float | None = None

    def _create(self, kind: str, stream: str) -> Created:
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        self.counter += 1
        sid, etag = f"s{self.counter}", f"e{self.counter}"
        self.sessions[(kind, stream, sid)] = etag
        return Created(session_id=sid, answer_sdp=ANSWER, etag=etag)

    async def publish(self, stream: str, offer_sdp: str, participant: str | None) -> Created:
        self.calls.append(("publish", stream, offer_sdp, participant))
        return self._create("whip", stream)

    def add_live_listener(self, listener: Callable[[str], None]) -> None:
        self.live_listeners.append(listener)

    def admit_viewer(self, stream: str) -> float | None:
        return self.wait_s  # the stream is live unless a test sets a wait

    def live_wait_expired(self, stream: str) -> SfuError:
        return Conflict("did not go live in time", retry_after=2)

    async def view(self, stream: str, offer_sdp: str, participant: str | None, options: Mapping[str, str],
                   *, source: str | None = None) -> Created:
        self.calls.append(("view", stream, offer_sdp, participant, dict(options)))
        return self._create("whep", stream)

    async def delete(self, kind: str, stream: str, session_id: str) -> bool:
        self.calls.append(("delete", kind, stream, session_id))
        return self.sessions.pop((kind, stream, session_id), None) is not None

    async def patch(self, kind: str, stream: str, session_id: str, fragment: str, if_match: str | None) -> Patched:
        self.calls.append(("patch", kind, stream, session_id, fragment, if_match))
        key = (kind, stream, session_id)
        if key not in self.sessions:
            raise NotFound("no such session")
        if if_match not in (None, "*", self.sessions[key]):
            raise PreconditionFailed("etag mismatch")
        if "NEWU" in fragment:  # ICE restart: new credentials, new ETag
            self.sessions[key] += "r"
            return Patched(etag=self.sessions[key], answer_fragment="a=ice-ufrag:SRV2\r\na=ice-pwd:SERVERPASSWORD2\r\n")
        return Patched(etag=self.sessions[key], answer_fragment=None)

    def session_exists(self, kind: str, stream: str, session_id: str) -> bool:
        return (kind, stream, session_id) in self.sessions

    async def set_layer(self, stream: str, session_id: str, request: Mapping[str, object]) -> dict[str, object]:
        self.calls.append(("set_layer", stream, session_id, dict(request)))
        if request.get("max_height") == "tall":
            raise BadRequest("max_height must be an integer number of pixels")
        return {"current_layer": "f", "target_layer": request.get("layer")}

    def stats(self) -> dict:
        return {"sessions": len(self.sessions)}


class Boom(FakeApi):
    async def publish(self, stream, offer_sdp, participant):
        raise RuntimeError("bug in the session manager")


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
async def make_client(api, tmp_path):
    clients: list[TestClient] = []

    async def make(session_api=None, registry=None, **changes) -> TestClient:
        config = dataclasses.replace(Config.for_tests(), token_secret=SECRET, **changes)
        (tmp_path / "watch.html").write_text("<!doctype html><title>watch</title>")
        (tmp_path / "secret.py").write_text("x = 1")
        app = build_app(config, session_api or api, registry or CollectorRegistry(), web_dir=tmp_path)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client) -> TestClient:
    return await make_client()


def bearer(stream="*", publish=True, subscribe=False, **kw) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, stream, publish, subscribe, **kw)}"}


async def publish(client, stream="live", headers=None, data=OFFER):
    return await client.post(f"/whip/{stream}", data=data, headers={**SDP, **bearer(), **(headers or {})})


# -- POST ---------------------------------------------------------------------------------------------


async def test_whip_publish_201(client, api):
    resp = await client.post("/whip/live", data=OFFER, headers={**SDP, **bearer(participant="obs-1")})
    assert resp.status == 201
    assert resp.headers["Content-Type"] == "application/sdp"
    assert resp.headers["Location"] == f"http://127.0.0.1:{client.port}/whip/live/s1"
    assert resp.headers["ETag"] == '"e1"'
    assert resp.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Location" in resp.headers["Access-Control-Expose-Headers"]
    assert await resp.text() == ANSWER
    assert api.calls == [("publish", "live", OFFER, "obs-1")]


async def test_location_uses_public_url(make_client):
    client = await make_client(public_url="https://sfu.example.com/base/")
    resp = await publish(client)
    assert resp.headers["Location"] == "https://sfu.example.com/base/whip/live/s1"


async def test_ice_server_links(make_client):
    client = await make_client(
        ice_servers=[
            {"urls": "stun:stun.example.net"},
            {
                "urls": ["turn:turn.example.net?transport=udp", "turns:turn.example.net"],
                "username": "u",
                "credential": 'p"w',
            },
        ]
    )
    auth = 'username="u"; credential="p\\"w"; credential-type="password"'
    expected = [
        '<stun:stun.example.net>; rel="ice-server"',
        f'<turn:turn.example.net?transport=udp>; rel="ice-server"; {auth}',
        f'<turns:turn.example.net>; rel="ice-server"; {auth}',
    ]
    resp = await publish(client)
    assert resp.headers.getall("Link") == expected
    options = await client.options("/whep/live")
    assert options.headers.getall("Link") == expected


@pytest.mark.parametrize("ctype", ["application/sdp; charset=utf-8", "Application/SDP", " application/sdp ;x=y"])
async def test_sdp_media_type_with_parameters(client, ctype):
    resp = await publish(client, headers={"Content-Type": ctype})
    assert resp.status == 201


@pytest.mark.parametrize("headers", [{"Content-Type": "text/plain"}, {"Content-Type": "application/sdpx"}, {}])
async def test_415_wrong_media_type(client, headers):
    resp = await client.post("/whip/live", data=OFFER.encode(), headers={**bearer(), **headers})
    assert resp.status == 415
    assert "application/sdp" in await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(("data", "reason"), [("", "empty"), (" \r\n", "empty"), (b"v=0\xff\xfe", "UTF-8")])
async def test_400_bad_body(client, api, data, reason):
    resp = await publish(client, data=data)
    assert resp.status == 400
    assert reason in await resp.text()
    assert api.calls == []


@pytest.mark.parametrize("stream", ["a%20b", "x" * 129, "a%2Fb", "%C3%A9t%C3%A9"])
async def test_400_bad_stream_name(client, stream):
    resp = await publish(client, stream=stream)
    assert resp.status == 400
    assert "stream name" in await resp.text()


async def test_413_content_length(make_client, api):
    client = await make_client(max_body_bytes=2048)
    resp = await publish(client, data="a" * 2049)
    assert resp.status == 413
    assert (await publish(client, data="v=0\r\n" + "a" * 2000)).status == 201


async def test_413_chunked_enforced_while_reading(make_client, api):
    client = await make_client(max_body_bytes=2048)

    async def chunks():
        for _ in range(10):
            yield b"a" * 1000

    resp = await client.post("/whip/live", data=chunks(), headers={**SDP, **bearer()})
    assert resp.status == 413
    assert api.calls == []


async def test_400_and_422_from_the_session_manager(client, api):
    api.fail = BadRequest("no m= line")
    resp = await publish(client)
    assert (resp.status, await resp.text()) == (400, "no m= line")
    api.fail = Unprocessable("no codec in common")
    resp = await publish(client)
    assert (resp.status, await resp.text()) == (422, "no codec in common")


async def test_409_retry_after(client, api):
    api.fail = Conflict("stream not live", retry_after=5)
    resp = await client.post("/whep/live", data=OFFER, headers=SDP)
    assert resp.status == 409
    assert resp.headers["Retry-After"] == "5"
    assert await resp.text() == "stream not live"
    assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]


async def test_whep_waits_for_the_live_notification(client, api):
    api.wait_s = 5.0
    request = asyncio.ensure_future(client.post("/whep/live", data=OFFER, headers=SDP))
    await asyncio.sleep(0.1)
    assert not request.done()  # held open: the stream is not live
    api.wait_s = None
    for listener in api.live_listeners:
        listener("other")  # another stream going live releases nothing
    await asyncio.sleep(0.05)
    assert not request.done()
    for listener in api.live_listeners:
        listener("live")
    resp = await asyncio.wait_for(request, 5)
    assert resp.status == 201
    assert api.calls[-1][0] == "view"


async def test_whep_wait_that_runs_out_is_409_retry_after(client, api):
    api.wait_s = 0.05
    resp = await client.post("/whep/live", data=OFFER, headers=SDP)
    assert (resp.status, resp.headers["Retry-After"], await resp.text()) == (409, "2", "did not go live in time")
    assert api.calls == []


async def test_503_retry_after(client, api):
    api.fail = Overloaded("too many sessions", retry_after=30)
    resp = await publish(client)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "30"


async def test_never_406_on_whep(client, api):
    api.fail = Teapot("counter-offer?")
    resp = await client.post("/whep/live", data=OFFER, headers=SDP)
    assert resp.status == 422


async def test_500_for_unexpected_errors_and_the_server_lives_on(make_client):
    registry = CollectorRegistry()
    client = await make_client(session_api=Boom(), registry=registry)
    resp = await publish(client)
    assert resp.status == 500
    assert await resp.text() == "internal server error"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert registry.get_sample_value("sfu_http_rejected_total", {"reason": "internal_error"}) == 1
    assert (await client.get("/healthz")).status == 200


# -- tokens -------------------------------------------------------------------------------------------


async def test_401_missing_token(client, api):
    resp = await client.post("/whip/live", data=OFFER, headers=SDP)
    assert resp.status == 401
    assert "missing" in await resp.text()
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.calls == []


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("garbage", "malformed"),
        (mint(SECRET, "*", True, False, ttl_s=60, now=1_000_000), "expired"),
        (mint("x" * 32, "*", True, False), "signature"),
    ],
)
async def test_401_invalid_token(client, token, reason):
    resp = await client.post("/whip/live", data=OFFER, headers={**SDP, "Authorization": f"Bearer {token}"})
    assert resp.status == 401
    assert reason in await resp.text()


async def test_403_wrong_stream_or_capability(client):
    resp = await publish(client, stream="live", headers=bearer(stream="shop-*"))
    assert resp.status == 403 and "stream" in await resp.text()
    resp = await publish(client, stream="live", headers=bearer(publish=False, subscribe=True))
    assert resp.status == 403 and "publish" in await resp.text()
    assert (await publish(client, stream="shop-1", headers=bearer(stream="shop-*"))).status == 201


@pytest.mark.parametrize("scheme", ["Bearer ", "bearer ", ""])
async def test_bearer_and_bare_tokens(client, scheme):
    token = mint(SECRET, "live", True, False)
    resp = await client.post("/whip/live", data=OFFER, headers={**SDP, "Authorization": scheme + token})
    assert resp.status == 201


async def test_whep_open_by_default(client, api):
    resp = await client.post("/whep/live?layer=h&max_height=360", data=OFFER, headers=SDP)
    assert resp.status == 201
    assert resp.headers["Location"].endswith("/whep/live/s1")
    assert api.calls == [("view", "live", OFFER, None, {"layer": "h", "max_height": "360"})]
    # a token, when given, names the participant; a stale one is ignored on an open stream
    await client.post("/whep/live", data=OFFER, headers={**SDP, **bearer(subscribe=True, participant="v1")})
    await client.post("/whep/live", data=OFFER, headers={**SDP, "Authorization": "Bearer junk"})
    assert [c[3] for c in api.calls[1:]] == ["v1", None]


async def test_whep_viewer_token_required(make_client, api):
    client = await make_client(viewer_token_required=True)
    assert (await client.post("/whep/live", data=OFFER, headers=SDP)).status == 401
    assert (await client.post("/whep/live", data=OFFER, headers={**SDP, **bearer()})).status == 403
    resp = await client.post("/whep/live", data=OFFER, headers={**SDP, **bearer(publish=False, subscribe=True)})
    assert resp.status == 201
    location = resp.headers["Location"]
    assert (await client.session.delete(location)).status == 401
    assert (await client.session.delete(location, headers=bearer(publish=False, subscribe=True))).status == 200


# -- DELETE -------------------------------------------------------------------------------------------


async def test_delete_then_404(client, api):
    """RFC 9725 §4.3: a session URL that no longer exists answers 404."""
    location = (await publish(client)).headers["Location"]
    assert (await client.session.delete(location, headers=bearer())).status == 200
    assert (await client.session.delete(location, headers=bearer())).status == 404
    assert [c for c in api.calls if c[0] == "delete"] == [("delete", "whip", "live", "s1")] * 2
    assert api.sessions == {}


async def test_delete_whip_needs_publish_token_whep_does_not(client, api):
    location = (await publish(client)).headers["Location"]
    assert (await client.session.delete(location)).status == 401
    assert (await client.session.delete(location, headers=bearer(publish=False, subscribe=True))).status == 403
    assert api.session_exists("whip", "live", "s1")
    viewer = (await client.post("/whep/live", data=OFFER, headers=SDP)).headers["Location"]
    assert (await client.session.delete(viewer)).status == 200
    assert not api.session_exists("whep", "live", "s2")


# -- PATCH --------------------------------------------------------------------------------------------


async def test_patch_trickle_204(client, api):
    location = (await publish(client)).headers["Location"]
    resp = await client.session.patch(location, data=TRICKLE, headers={**FRAG, **bearer(), "If-Match": '"e1"'})
    assert resp.status == 204
    assert resp.headers["ETag"] == '"e1"'
    assert api.calls[-1] == ("patch", "whip", "live", "s1", TRICKLE, "e1")


async def test_patch_ice_restart_200_new_etag(client, api):
    location = (await publish(client)).headers["Location"]
    resp = await client.session.patch(location, data=RESTART, headers={**FRAG, **bearer(), "If-Match": "*"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/trickle-ice-sdpfrag"
    assert resp.headers["ETag"] == '"e1r"'
    assert "SRV2" in await resp.text()
    assert api.calls[-1][-1] == "*"


async def test_patch_412_on_etag_mismatch(client):
    location = (await publish(client)).headers["Location"]
    resp = await client.session.patch(location, data=RESTART, headers={**FRAG, **bearer(), "If-Match": '"stale"'})
    assert resp.status == 412
    weak = await client.session.patch(location, data=RESTART, headers={**FRAG, **bearer(), "If-Match": 'W/"e1"'})
    assert weak.status == 412  # strong comparison


async def test_patch_404_unknown_session(client, api):
    resp = await client.patch("/whip/live/nope", data=TRICKLE, headers={**FRAG, **bearer()})
    assert resp.status == 404
    assert not [c for c in api.calls if c[0] == "patch"]


async def test_patch_415_and_401(client):
    location = (await publish(client)).headers["Location"]
    assert (await client.session.patch(location, data=TRICKLE, headers={**SDP, **bearer()})).status == 415
    assert (await client.session.patch(location, data=TRICKLE, headers=FRAG)).status == 401


async def test_405_on_other_methods(client):
    resp = await client.get("/whip/live")
    assert resp.status == 405
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert (await client.put("/whep/live/s1", data="x")).status == 405


# -- OPTIONS / CORS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["whip", "whep"])
async def test_options_collection(make_client, kind):
    client = await make_client(cors_origin="https://shop.example.com")
    resp = await client.options(f"/{kind}/live")
    assert resp.status == 204
    h = resp.headers
    assert h["Access-Control-Allow-Origin"] == "https://shop.example.com"
    assert h["Access-Control-Allow-Methods"] == "OPTIONS, POST, PATCH, DELETE"
    assert h["Access-Control-Allow-Headers"] == "Authorization, Content-Type, If-Match"
    assert h["Access-Control-Expose-Headers"] == "Location, ETag, Link, Accept-Patch, Retry-After"
    assert h["Accept-Post"] == "application/sdp"


async def test_options_resource(client):
    resp = await client.options("/whep/live/anything")
    assert resp.status == 204
    assert resp.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
    assert resp.headers["Access-Control-Allow-Methods"] == "OPTIONS, POST, PATCH, DELETE"


# -- operations, pages, metrics -----------------------------------------------------------------------


async def test_healthz_stats_metrics(make_client, api):
    registry = CollectorRegistry()
    client = await make_client(registry=registry)
    await publish(client)
    await client.post("/whip/live", data=OFFER, headers=SDP)  # 401
    resp = await client.get("/healthz")
    assert (resp.status, await resp.text()) == (200, "ok")
    admin = {"Authorization": "Bearer " + KeySet.from_config(SECRET).mint("*", admin=True)}
    assert (await client.get("/api/stats")).status == 401  # the admin credential (tests/integration/test_admin.py)
    assert await (await client.get("/api/stats", headers=admin)).json() == {"sessions": 1}
    metrics = await client.get("/metrics", headers=admin)
    assert metrics.headers["Content-Type"].startswith("text/plain")
    text = await metrics.text()
    assert 'sfu_http_responses_total{route="/whip/{stream}",status="201"} 1.0' in text
    assert 'sfu_http_responses_total{route="/whip/{stream}",status="401"} 1.0' in text
    assert 'sfu_http_rejected_total{reason="unauthorized"} 2.0' in text
    await client.get("/no/such/thing")
    assert registry.get_sample_value("sfu_http_responses_total", {"route": "unmatched", "status": "404"}) == 1
    assert registry.get_sample_value("sfu_http_rejected_total", {"reason": "not_found"}) == 1


async def test_web_pages(client):
    index = await client.get("/")
    assert index.status == 200 and 'href="watch.html"' in await index.text()
    for path in ("/static/watch.html", "/watch.html"):
        resp = await client.get(path)
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html")
    for path in ("/static/secret.py", "/static/../config.py", "/static/%2e%2e/config.py", "/static/nope.html"):
        assert (await client.get(path)).status == 404


# -- per-viewer simulcast layer -------------------------------------------------------------------


async def test_layer_call_on_a_running_viewer(client, api):
    resp = await client.post("/whep/live", data=OFFER, headers={**SDP, **bearer(subscribe=True, publish=False)})
    assert resp.status == 201
    JSON = {"Content-Type": "application/json"}
    resp = await client.post("/whep/live/s1/layer", data='{"layer": "h"}', headers=JSON)
    assert resp.status == 200
    assert (await resp.json()) == {"current_layer": "f", "target_layer": "h"}
    assert api.calls[-1] == ("set_layer", "live", "s1", {"layer": "h"})
    resp = await client.post("/whep/live/s1/layer", data='{"paused": true, "max_height": 360}', headers=JSON)
    assert resp.status == 200 and api.calls[-1][3] == {"paused": True, "max_height": 360}
    assert (await client.post("/whep/live/s1/layer", data="{nope", headers=JSON)).status == 400
    assert (await client.post("/whep/live/s1/layer", data='{"bitrate": 5}', headers=JSON)).status == 400
    assert (await client.post("/whep/live/s1/layer", data='["h"]', headers=JSON)).status == 400
    assert (await client.post("/whep/live/s1/layer", data='{"max_height": "tall"}', headers=JSON)).status == 400
    assert (await client.post("/whep/live/s1/layer", data='{"layer": "h"}', headers=SDP)).status == 415
    assert (await client.post("/whep/live/nope/layer", data='{"layer": "h"}', headers=JSON)).status == 404
    assert (await client.post("/whip/live/s1/layer", data='{"layer": "h"}', headers=JSON)).status in (404, 405)
    resp = await client.options("/whep/live/s1/layer")
    assert resp.status == 204 and "POST" in resp.headers["Access-Control-Allow-Methods"]
