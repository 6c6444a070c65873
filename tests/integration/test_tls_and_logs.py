"""HTTPS (issue 13, point 8) and logs (point 7) of a real server.

- `tls_cert` / `tls_key`: WHIP, WHEP, the pages and the API over TLS with a self-signed certificate
  made here; plain http to that port gets no answer.
- `sfu serve --log-format json`: every stderr line is a JSON object; each WHIP/WHEP request has one
  `sfu.access` line with its status and duration, with the stream and session (public id) fields,
  as do the session manager's lines about that session.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import json

import aiohttp
import pytest

import sfu
from sfu.config import ConfigError
from sfu.core.sessions import public_id
from sfu.testing import PacketPublisher, PacketViewer
from sfu.testing.certs import client_context, self_signed
from sfu.testing.process import ServeProcess


async def test_whip_whep_pages_and_api_over_https(tmp_path):
    cert, key = self_signed(tmp_path)
    config = dataclasses.replace(sfu.Config.for_tests(), tls_cert=str(cert), tls_key=str(key))
    async with sfu.Server(config) as server:
        assert server.http_url.startswith("https://127.0.0.1:")
        connector = aiohttp.TCPConnector(ssl=client_context(cert))
        async with aiohttp.ClientSession(connector=connector) as http:
            async with PacketPublisher(server.whip_url("tls"), server.mint_token("tls", publish=True), http=http), \
                    PacketViewer(server.whep_url("tls"), http=http) as viewer:
                await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 5, 15)
                assert viewer.resource_url.startswith("https://")  # Location follows the scheme
                async with http.get(server.http_url + "/static/publish.html") as r:
                    assert r.status == 200 and "<html" in (await r.text()).lower()
                admin = {"Authorization": f"Bearer {server.mint_admin_token()}"}
                async with http.get(server.http_url + "/api/stats", headers=admin) as r:
                    assert r.status == 200 and "tls" in (await r.json())["streams"]
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(server.http_url.replace("https://", "http://") + "/healthz") as r:
                    await r.read()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # not trusted without the cert
                async with plain.get(server.http_url + "/healthz") as r:
                    await r.read()


async def test_tls_files_that_do_not_exist_are_a_config_error(tmp_path):
    config = dataclasses.replace(sfu.Config.for_tests(), tls_cert=str(tmp_path / "no.pem"), tls_key=str(tmp_path / "k"))
    with pytest.raises(ConfigError, match="no such file"):
        async with sfu.Server(config):
            pass


async def test_json_logs_with_stream_session_and_one_access_line_per_request():
    async with ServeProcess("--log-format", "json", keep_log=True) as serve, aiohttp.ClientSession() as http:
        async with PacketPublisher(serve.whip_url("j"), serve.mint_token("j", publish=True)) as pub, \
                PacketViewer(serve.whep_url("j")) as viewer:
            await viewer.wait_for(lambda: viewer.stats["video"]["frames"] >= 3, 15)
            ids = {"whip": public_id(pub.resource_url.rsplit("/", 1)[1]),
                   "whep": public_id(viewer.resource_url.rsplit("/", 1)[1])}
            secret_ids = [c.resource_url.rsplit("/", 1)[1] for c in (pub, viewer)]
        async with http.post(serve.whip_url("j"), data="v=0\r\n", headers={"Content-Type": "application/sdp"}) as r:
            assert r.status == 401
        assert serve.proc is not None
        serve.proc.terminate()
        assert await serve.exit_code(15) == 0
    lines = [json.loads(line) for line in serve.log_lines if line.strip()]  # every line is JSON
    assert lines and all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
    access = [e for e in lines if e["logger"] == "sfu.access"]
    posts = {(e["kind"], e["status"]): e for e in access if e["method"] == "POST"}
    for kind in ("whip", "whep"):
        entry = posts[(kind, 201)]
        assert entry["stream"] == "j" and entry["session"] == ids[kind], entry
        assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0
    refused = posts[("whip", 401)]
    assert refused["stream"] == "j" and refused["session"] is None
    deletes = [e for e in access if e["method"] == "DELETE"]
    assert {(e["kind"], e["session"], e["status"]) for e in deletes} == {("whip", ids["whip"], 200),
                                                                         ("whep", ids["whep"], 200)}
    assert len(access) == 5, access  # two POSTs, two DELETEs, the refused POST
    published = [e for e in lines if e["logger"] == "sfu.sessions" and e["message"].startswith("publish j")]
    assert published and published[0]["session"] == ids["whip"] and published[0]["stream"] == "j"
    closed = [e for e in lines if e["logger"] == "sfu.sessions" and "closed" in e["message"]]
    assert {e["session"] for e in closed} >= set(ids.values())
    text = "\n".join(serve.log_lines)
    assert not any(secret in text for secret in secret_ids)  # never the session URL's secret id


def test_address_in_use_names_the_port():
    """Issue 13, point 11: "address already in use" says which port and which flag moves it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sfu", "serve", "--http-host", "127.0.0.1", "--http-port", str(port),
             "--udp-port", "0", "--public-ip", "127.0.0.1", "--token-secret", "x" * 32],
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    assert f"HTTP port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--http-port" in result.stderr and "Traceback" not in result.stderr
