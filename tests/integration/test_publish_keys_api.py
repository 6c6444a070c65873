"""Encoders' publish keys through the admin API, against a real server (issue 13, point 9).

An admin creates a key for one stream; an encoder publishes with it as its bearer token (as OBS
sends its "Bearer Token"); the listing never shows the key or its hash; revoking it ends the
session it created and refuses it from then on.
"""

from __future__ import annotations

import aiohttp

from sfu.testing import PacketPublisher, PacketViewer
from sfu.testing._client import WhipError


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_publish_key_lifecycle(server):
    admin = bearer(server.mint_admin_token(participant="ops"))
    base = server.http_url + "/admin/publish-keys"
    async with aiohttp.ClientSession() as http:
        async with http.post(base, json={"stream": "shop", "label": "OBS A"}, headers=admin) as r:
            assert r.status == 201
            created = await r.json()
        key = created["key"]
        async with http.post(base, json={"stream": "shop"}, headers=bearer(server.mint_token("shop", publish=True))) as r:
            assert r.status == 403  # a publish token is no admin
        async with http.post(base, json={"stream": "sh*p"}, headers=admin) as r:
            assert r.status == 400  # a key is for one named stream
        async with PacketPublisher(server.whip_url("shop"), key) as publisher, \
                PacketViewer(server.whep_url("shop")) as viewer:
            await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, 15)
            async with http.get(base, headers=admin) as r:
                listed = (await r.json())["publish_keys"]
            assert listed == [{"id": created["id"], "stream": "shop", "label": "OBS A", "created": created["created"]}]
            assert key.rsplit("_", 1)[1] not in repr(server.stats())
            try:
                async with PacketPublisher(server.whip_url("other"), key):
                    raise AssertionError("a key published to another stream")
            except WhipError as e:
                assert e.status == 403
            async with http.delete(f"{base}/{created['id']}", headers=admin) as r:
                assert r.status == 200
                assert len((await r.json())["ended"]) == 1
            await publisher.wait_for(lambda: not server.stats()["streams"].get("shop", {}).get("live"), 10)
            async with http.delete(f"{base}/{created['id']}", headers=admin) as r:
                assert r.status == 404
        try:
            async with PacketPublisher(server.whip_url("shop"), key):
                raise AssertionError("a revoked key published")
        except WhipError as e:
            assert e.status == 401
