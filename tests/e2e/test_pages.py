"""The pages a seller and a buyer use, driven in headless Chromium: the watch page as a player (live,
ended, reconnecting back to live, quality changed while playing, the viewer count), the publish page's
viewer count and connection health, the index of live streams, and ICE servers taken from the
server's Link headers (RFC 9725 §4.6). Each state is kept as a screenshot (tests/e2e/artifacts/)."""
from __future__ import annotations

import asyncio
import dataclasses
import json

import aiohttp
import pytest

import sfu
from e2e_helpers import ClientPage, new_client_page, open_publisher, open_viewer, wait_for
from page_artifacts import screenshot

pytestmark = pytest.mark.e2e

LIVE = 's => s.player === "live" && s.video !== null && s.video.framesDecoded > 5'


async def _get_json(url: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return await resp.json()


async def test_watch_page_live_ended_and_back(context, server):
    """Live with a viewer count; when the publisher leaves: "ended", no frozen frame, the session
    given back; when a publisher comes back: "reconnecting", then live again by itself. The publish
    page shows the viewer count and per-layer bitrate."""
    publisher = await open_publisher(context, server, "show")
    viewer = await open_viewer(context, server, "show")

    await wait_for(viewer, LIVE, what="playing live", pages=[publisher])
    await wait_for(viewer, "s => s.viewers === 1", what="viewer count 1")
    assert (await viewer.page.text_content("#badge")).strip().lower() == "● live"
    assert (await viewer.page.text_content("#viewers")).strip() == "1 watching"
    assert await viewer.page.is_hidden("#overlay")
    assert await viewer.page.is_disabled("#quality")  # one layer: nothing to choose
    await screenshot(viewer.page, "watch", "live")

    s = await wait_for(publisher, """s => s.health.viewers === 1 && Object.values(s.health.layers).some(
        l => l.kind === "video" && l.bitrate_bps > 0 && l.rtt_ms !== null)""",
                       what="publish page: 1 viewer, video bitrate and RTT")
    assert (await publisher.page.text_content("#viewers")).strip() == "1 viewer"
    rows = await publisher.page.locator("#health tr").count()
    assert rows == len(s["health"]["layers"]) >= 2, s["health"]  # audio + video
    await screenshot(publisher.page, "publish", "health")

    await publisher.stop()
    await wait_for(viewer, 's => s.player === "ended"', what="ended after the publisher left")
    assert (await viewer.page.text_content("#badge")).strip().lower() == "ended"
    assert await viewer.page.evaluate("() => document.getElementById('video').srcObject === null")
    assert "ended" in (await viewer.page.text_content("#overlay")).lower()
    await _wait_until(lambda: not any(s["kind"] == "whep" for s in server.stats()["sessions"].values()),
                      "the ended viewer's session closed on the server")
    await screenshot(viewer.page, "watch", "ended")

    again = await open_publisher(context, server, "show")
    s = await wait_for(viewer, LIVE + " && s.connects === 2", what="live again after the show came back",
                       pages=[again])
    log = s["playerLog"]
    assert log[log.index("ended"):] == ["ended", "reconnecting", "live"], log
    await screenshot(viewer.page, "watch", "reconnected")


async def test_watch_page_reconnects_when_its_session_is_lost(context, server):
    """The server ends the viewer's session while the show goes on (as after a server-side
    timeout): the page notices the connection go, shows "reconnecting" and plays again on a new
    session."""
    publisher = await open_publisher(context, server, "lost")
    viewer = await open_viewer(context, server, "lost")
    await wait_for(viewer, LIVE, what="playing", pages=[publisher])
    (session_id,) = [sid for sid, s in server.manager.sessions.items() if s.kind == "whep"]
    assert await server.manager.delete("whep", "lost", session_id)
    s = await wait_for(viewer, LIVE + " && s.connects === 2", timeout=60, what="playing again on a new session",
                       pages=[publisher])
    log = s["playerLog"]
    assert log == ["live", "reconnecting", "live"] or log == ["live", "stalled", "reconnecting", "live"], log
    await screenshot(viewer.page, "watch", "after-reconnect")


async def test_quality_changed_while_playing(context, server):
    """A simulcast stream: the quality menu lists its layers; choosing the lowest while playing
    moves the viewer there (server and decoded size agree); Auto lifts the limit again."""
    publisher = await open_publisher(context, server, "sim", simulcast=True)
    await wait_for(publisher, """s => ["q", "h", "f"].every(r => s.outbound[r] && s.outbound[r].bytesSent > 0)""",
                   what="all three layers sent")
    viewer = await open_viewer(context, server, "sim")
    await wait_for(viewer, LIVE, what="playing", pages=[publisher])
    await _wait_page(viewer, "() => document.querySelectorAll('#quality option').length === 4",
                     "quality menu with Auto + three layers")
    assert not await viewer.page.is_disabled("#quality")

    sent = await publisher.stats()
    q_width = sent["outbound"]["q"]["frameWidth"]
    # Auto first climbs above the lowest layer (the estimate ramps up on loopback) ...
    await wait_for(viewer, f"s => s.video.frameWidth > {q_width}", what=f"auto: wider than q's {q_width}",
                   pages=[publisher])
    await screenshot(viewer.page, "watch", "quality-auto")

    # ... the lowest layer, chosen while playing ...
    await viewer.page.select_option("#quality", "q")
    await _wait_until(lambda: _viewer_layer(server, "sim")["current_layer"] == "q", "the server sends q")
    assert _viewer_layer(server, "sim")["limit"]["layer"] == "q"
    await wait_for(viewer, f"s => s.video.frameWidth > 0 && s.video.frameWidth <= {q_width}",
                   what=f"decoded width <= the q layer's {q_width}", pages=[publisher])
    await screenshot(viewer.page, "watch", "quality-q")

    # ... and automatic again: the limit is lifted and the picture grows back.
    await viewer.page.select_option("#quality", "")
    await _wait_until(lambda: _viewer_layer(server, "sim")["limit"]["layer"] is None, "the limit lifted (auto)")
    await wait_for(viewer, f"s => s.video.frameWidth > {q_width}", what="auto: wider than q again",
                   pages=[publisher])


async def test_index_lists_live_streams(context, server):
    publisher = await open_publisher(context, server, "alpha")
    viewer = await open_viewer(context, server, "alpha")
    await wait_for(viewer, LIVE, what="playing", pages=[publisher])
    index = await new_client_page(context, "index")
    await index.goto(server.http_url + "/")
    await _wait_page(index, """() => { const li = document.querySelector('li[data-stream="alpha"]');
        return li !== null && li.textContent.includes("1 watching"); }""", "alpha listed with 1 viewer")
    assert await index.page.is_hidden("#empty")
    href = await index.page.get_attribute('li[data-stream="alpha"] a', "href")
    assert href == "/static/watch.html?stream=alpha"
    listed = (await _get_json(server.http_url + "/api/streams"))["streams"]
    assert [s["name"] for s in listed] == ["alpha"] and listed[0]["viewers"] == 1
    assert "publisher" not in json.dumps(listed) and "session" not in json.dumps(listed)
    await screenshot(index.page, "index", "live")

    await publisher.stop()
    await _wait_page(index, "() => !document.getElementById('empty').hidden", "the list empty again")


class _StunSink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams = 0

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) >= 20 and data[4:8] == b"\x21\x12\xa4\x42":  # STUN magic cookie (RFC 8489 §5)
            self.datagrams += 1


async def test_pages_use_ice_servers_from_link_header(context):
    """The server announces a STUN server in its Link headers: both pages configure it, and Chromium
    sends it binding requests (a STUN sink on loopback counts them)."""
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(_StunSink, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    url = f"stun:127.0.0.1:{port}"
    try:
        config = dataclasses.replace(sfu.Config.for_tests(), ice_servers=[{"urls": url}])
        async with sfu.Server(config) as server:
            publisher = await open_publisher(context, server, "ice")
            viewer = await open_viewer(context, server, "ice")
            s = await wait_for(viewer, LIVE, what="playing", pages=[publisher])
            assert _urls(s["iceServers"]) == [url], s["iceServers"]
            p = await publisher.stats()
            assert _urls(p["iceServers"]) == [url], p["iceServers"]
            await _wait_until(lambda: sink.datagrams > 0, "a STUN request at the announced server")
    finally:
        transport.close()


# -- helpers


def _urls(servers: list[dict]) -> list[str]:
    """The URLs of RTCIceServer dictionaries as Chromium reports them (`urls` a string or a list)."""
    return [u for x in servers for u in ([x["urls"]] if isinstance(x["urls"], str) else x["urls"])]


def _viewer_layer(server, stream: str) -> dict:
    viewers = [s for s in server.stats()["sessions"].values() if s["kind"] == "whep" and s["stream"] == stream]
    assert len(viewers) == 1, viewers
    return viewers[0]["video_layer"]


async def _wait_page(cp: ClientPage, js: str, what: str, timeout: float = 30.0) -> None:
    deadline = loop_time() + timeout
    while not await cp.page.evaluate(js):
        if loop_time() > deadline:
            raise AssertionError(f"{cp.name}: timed out waiting for {what}\n{await cp.describe()}")
        await asyncio.sleep(0.1)


async def _wait_until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = loop_time() + timeout
    while not condition():
        if loop_time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def loop_time() -> float:
    return asyncio.get_running_loop().time()
