"""Who may do what (issue 13, points 1 and 2), against a real server on loopback.

The admin credential (`sfu token --admin`) is required for `/api/stats`, `/metrics` and the admin
API; publish and subscribe tokens are not enough. Keys rotate by id and tokens are revoked through
the admin API, which ends the sessions they created. Sessions are named by their public id only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import signal

import aiohttp
import pytest

import sfu
from sfu import tokens
from sfu.core.sessions import public_id
from sfu.errors import Forbidden
from sfu.keys import ADMIN, KeySet, describe
from sfu.testing import PacketPublisher, PacketViewer
from sfu.testing.process import ServeProcess

K1 = secrets.token_urlsafe(32)
K2 = secrets.token_urlsafe(32)
GUARDED = ("/api/stats", "/metrics", "/admin/streams", "/admin/sessions", "/admin/revocations")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rid(client) -> str:
    return client.resource_url.rsplit("/", 1)[1]


async def test_stats_metrics_and_admin_api_need_the_admin_credential(server):
    publish = server.mint_token("*", publish=True, subscribe=True)
    admin = server.mint_admin_token(participant="ops")
    other_server_admin = KeySet([("default", K1)]).mint("*", admin=True)
    async with aiohttp.ClientSession() as http:
        for path in GUARDED:
            url = server.http_url + path
            async with http.get(url) as r:
                assert r.status == 401, path
                assert r.headers["WWW-Authenticate"] == 'Bearer realm="sfu"'
            async with http.get(url, headers=bearer(publish)) as r:
                assert r.status == 403, path  # a valid token, without the admin capability
            async with http.get(url, headers=bearer(other_server_admin)) as r:
                assert r.status == 401, path  # signed with another key
            async with http.get(url, headers=bearer(admin)) as r:
                assert r.status == 200, path
        async with http.delete(server.http_url + "/admin/streams/x", headers=bearer(publish)) as r:
            assert r.status == 403
        async with http.post(server.http_url + "/admin/drain", headers=bearer(publish)) as r:
            assert r.status == 403
        assert not server.drain.draining
        for path in ("/healthz", "/readyz"):
            async with http.get(server.http_url + path) as r:
                assert r.status == 200, path
        async with http.get(server.http_url + "/metrics", headers=bearer(admin)) as r:
            text = await r.text()
    assert 'sfu_http_rejected_total{reason="unauthorized"}' in text
    assert 'sfu_http_rejected_total{reason="forbidden"}' in text


def test_admin_tokens_are_for_every_stream_only():
    keys = KeySet([("k1", K1)])
    with pytest.raises(ValueError, match="every stream"):
        keys.mint("shop-*", admin=True)
    # a token for every stream with every other capability is still not an admin token
    forged = keys.mint("*", publish=True, subscribe=True)
    with pytest.raises(Forbidden):
        keys.verify(forged, "*", ADMIN)


async def test_metrics_on_a_separate_listen_address_need_no_credential():
    config = dataclasses.replace(sfu.Config.for_tests(), metrics_listen="127.0.0.1:0")
    async with sfu.Server(config) as server, aiohttp.ClientSession() as http:
        assert server.metrics_port
        async with http.get(f"http://127.0.0.1:{server.metrics_port}/metrics") as r:
            assert r.status == 200
            assert "sfu_http_responses_total" in await r.text()
        async with http.get(f"http://127.0.0.1:{server.metrics_port}/api/stats") as r:
            assert r.status == 404  # only metrics there
        async with http.get(server.http_url + "/metrics") as r:
            assert r.status == 401  # the main port still needs the credential


async def test_admin_lists_details_and_ends_sessions_and_streams(server, caplog):
    caplog.set_level(logging.INFO, logger="sfu.admin")
    admin = bearer(server.mint_admin_token(participant="ops-alice"))
    async with PacketPublisher(server.whip_url("a"), server.mint_token("a", publish=True, participant="cam")) as pub, \
            PacketViewer(server.whep_url("a")) as v1, PacketViewer(server.whep_url("a")) as v2, \
            PacketPublisher(server.whip_url("b"), server.mint_token("b", publish=True)) as pub_b, \
            aiohttp.ClientSession() as http:
        for client in (v1, v2):
            await client.wait_for(lambda c=client: c.stats["video"]["frames"] >= 3, 15)
        base = server.http_url + "/admin"
        async with http.get(base + "/streams", params={"limit": "1"}, headers=admin) as r:
            first = await r.json()
        assert [s["name"] for s in first["streams"]] == ["a"] and first["next"] == "a"
        async with http.get(base + "/streams", params={"limit": "1", "after": "a"}, headers=admin) as r:
            second = await r.json()
        assert [s["name"] for s in second["streams"]] == ["b"] and second["next"] is None
        assert first["streams"][0]["viewers"] == 2
        assert first["streams"][0]["publisher"] == public_id(rid(pub))

        ids = {public_id(rid(c)) for c in (pub, v1, v2, pub_b)}
        seen, after = [], ""
        while True:  # page through all sessions, two at a time
            async with http.get(base + "/sessions", params={"limit": "2", "after": after}, headers=admin) as r:
                body = await r.json()
            seen += body["sessions"]
            if body["next"] is None:
                break
            after = body["next"]
        assert {s["id"] for s in seen} == ids and len(seen) == 4
        text = repr(seen)
        assert not any(rid(c) in text for c in (pub, v1, v2, pub_b))  # never the secret URL id
        async with http.get(base + "/sessions", params={"stream": "a"}, headers=admin) as r:
            assert {s["id"] for s in (await r.json())["sessions"]} == ids - {public_id(rid(pub_b))}

        async with http.get(base + "/streams/a", headers=admin) as r:
            detail = await r.json()
        assert detail["live"] is True and [t["kind"] for t in detail["tracks"]] == ["audio", "video"]
        assert {s["id"] for s in detail["sessions"]} == ids - {public_id(rid(pub_b))}
        assert next(s for s in detail["sessions"] if s["kind"] == "whip")["participant"] == "cam"
        async with http.get(base + "/streams/nope", headers=admin) as r:
            assert r.status == 404

        async with http.delete(base + "/sessions/" + public_id(rid(v1)), headers=admin) as r:
            assert r.status == 200
        await v1.wait_for(lambda: v1.dtls_state == "closed", 5)
        assert public_id(rid(v1)) not in server.stats()["sessions"]
        async with http.delete(base + "/sessions/" + public_id(rid(v1)), headers=admin) as r:
            assert r.status == 404
        async with http.delete(base + "/sessions/" + rid(v2), headers=admin) as r:
            assert r.status == 404  # the secret id is not how admins name sessions
        frames = v2.stats["video"]["frames"]
        await v2.wait_for(lambda: v2.stats["video"]["frames"] >= frames + 10, 10)  # the others go on

        async with http.delete(base + "/streams/a", headers=admin) as r:
            assert (r.status, (await r.json())["ended"]) == (200, 2)
        await pub.wait_for(lambda: pub.dtls_state == "closed", 5)
        await v2.wait_for(lambda: v2.dtls_state == "closed", 5)
        assert set(server.stats()["streams"]) == {"b"}
    audit = [r.getMessage() for r in caplog.records if r.name == "sfu.admin"]
    assert any(m.startswith("admin end_session by ops-alice") for m in audit), audit
    assert any(m.startswith("admin end_stream by ops-alice") and "sessions=2" in m for m in audit), audit


async def test_key_rotation_old_key_verifies_until_removed():
    base = dataclasses.replace(sfu.Config.for_tests(), token_keys=[{"kid": "k1", "secret": K1}])
    async with sfu.Server(base) as server:
        old = server.mint_token("s", publish=True)
        assert describe(old)[2] == "k1"
        async with PacketPublisher(server.whip_url("s"), old):
            pass
    rotated = dataclasses.replace(base, token_keys=[{"kid": "k2", "secret": K2}, {"kid": "k1", "secret": K1}])
    async with sfu.Server(rotated) as server:
        new = server.mint_token("s", publish=True)
        assert describe(new)[2] == "k2"  # the first key signs
        for token in (old, new):
            async with PacketPublisher(server.whip_url("s"), token):
                pass
    removed = dataclasses.replace(base, token_keys=[{"kid": "k2", "secret": K2}])
    async with sfu.Server(removed) as server, aiohttp.ClientSession() as http:
        async with PacketPublisher(server.whip_url("s"), new):
            pass
        async with http.post(server.whip_url("s"), data="v=0\r\n", headers={
            **bearer(old), "Content-Type": "application/sdp"}) as r:
            assert r.status == 401
            assert "removed key" in await r.text()
        # a token without a key id (signed with the plain secret) verifies only against kid "default"
        legacy = tokens.mint(K1, "s", publish=True, subscribe=False)
        async with http.post(server.whip_url("s"), data="v=0\r\n", headers={
            **bearer(legacy), "Content-Type": "application/sdp"}) as r:
            assert r.status == 401
    with_legacy = dataclasses.replace(base, token_keys=[{"kid": "k2", "secret": K2}, {"kid": "default", "secret": K1}])
    async with sfu.Server(with_legacy) as server:
        async with PacketPublisher(server.whip_url("s"), legacy):
            pass


async def test_revoked_tokens_end_their_sessions_and_are_refused(server, caplog):
    caplog.set_level(logging.INFO, logger="sfu.admin")
    admin = bearer(server.mint_admin_token(participant="ops-bob"))
    cam_token = server.mint_token("r", publish=True, participant="cam")
    viewer_token = server.mint_token("r", subscribe=True, participant="eve")
    cam_jti = describe(cam_token)[1]
    async with PacketPublisher(server.whip_url("r"), cam_token) as pub, \
            PacketViewer(server.whep_url("r"), viewer_token) as eve, \
            PacketViewer(server.whep_url("r")) as anon, aiohttp.ClientSession() as http:
        for client in (eve, anon):
            await client.wait_for(lambda c=client: c.stats["video"]["frames"] >= 3, 15)
        revoke = server.http_url + "/admin/revoke"
        async with http.post(revoke, json={"participant": "eve"}, headers=admin) as r:
            assert (await r.json())["ended"] == [public_id(rid(eve))]
        await eve.wait_for(lambda: eve.dtls_state == "closed", 5)
        frames = anon.stats["video"]["frames"]
        await anon.wait_for(lambda: anon.stats["video"]["frames"] >= frames + 10, 10)  # others go on
        # refused even though this stream is open to anonymous viewers
        async with http.post(server.whep_url("r"), data="v=0\r\n", headers={
            **bearer(viewer_token), "Content-Type": "application/sdp"}) as r:
            assert r.status == 401 and "revoked" in await r.text()

        async with http.post(revoke, json={"token_id": cam_jti}, headers=admin) as r:
            assert (await r.json())["ended"] == [public_id(rid(pub))]
        await pub.wait_for(lambda: pub.dtls_state == "closed", 5)
        async with http.post(server.whip_url("r"), data="v=0\r\n", headers={
            **bearer(cam_token), "Content-Type": "application/sdp"}) as r:
            assert r.status == 401 and "revoked" in await r.text()
        # another token of the same participant was not revoked by token id
        async with PacketPublisher(server.whip_url("r"), server.mint_token("r", publish=True, participant="cam")):
            pass
        async with http.get(server.http_url + "/admin/revocations", headers=admin) as r:
            assert await r.json() == {"token_ids": [cam_jti], "participants": ["eve"]}
        for bad in ({}, {"participant": 5}, {"who": "x"}, [1]):
            async with http.post(revoke, json=bad, headers=admin) as r:
                assert r.status == 400, bad
    audit = [r.getMessage() for r in caplog.records if r.name == "sfu.admin"]
    assert any(m.startswith("admin revoke by ops-bob") and "participant=eve" in m for m in audit), audit


async def test_sighup_reloads_token_keys_without_a_restart(tmp_path):
    """Rotation on a running `sfu serve`: edit token_keys, SIGHUP; removed keys stop verifying and
    the sessions already there are untouched. A bad file leaves the keys as they were."""
    config = tmp_path / "sfu.toml"

    def write(*keys: tuple[str, str]) -> None:
        config.write_text("token_keys = [" + ", ".join(f'{{kid = "{k}", secret = "{s}"}}' for k, s in keys) + "]\n")

    async def status(http, token: str) -> int:
        async with http.post(serve.whip_url("h"), data="v=0\r\n",
                             headers={**bearer(token), "Content-Type": "application/sdp"}) as r:
            return r.status

    async def until(predicate, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + 10
        while not await predicate():
            assert asyncio.get_running_loop().time() < deadline, what
            await asyncio.sleep(0.05)

    old = KeySet([("k1", K1)]).mint("*", publish=True)
    new = KeySet([("k2", K2)]).mint("*", publish=True)
    write(("k1", K1))
    async with ServeProcess("--config", str(config), keep_log=True) as serve, aiohttp.ClientSession() as http, \
            PacketPublisher(serve.whip_url("live"), old) as publisher:
        assert serve.proc is not None
        assert (await status(http, old), await status(http, new)) == (400, 401)  # 400: the token passed
        write(("k2", K2), ("k1", K1))
        serve.proc.send_signal(signal.SIGHUP)
        await until(lambda: _is(status(http, new), 400), "k2 never verified after SIGHUP")
        assert await status(http, old) == 400
        write(("k2", K2))
        serve.proc.send_signal(signal.SIGHUP)
        await until(lambda: _is(status(http, old), 401), "k1 still verifies after its removal")
        write(("k2", "short"))
        serve.proc.send_signal(signal.SIGHUP)
        await until(lambda: _true(any("not reloaded" in line for line in serve.log_lines)), "no reload error logged")
        assert await status(http, new) == 400
        assert publisher.dtls_state == "connected"  # the running session was left alone


async def _is(status, expected: int) -> bool:
    return await status == expected


async def _true(value: bool) -> bool:
    return value
