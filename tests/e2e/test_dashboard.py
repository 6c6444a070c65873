"""The operators' dashboard (sfu/web/dashboard.html) in headless Chromium: a Chromium publisher and a
viewer are live, the dashboard shows the stream, its layers and bitrates, viewers per layer, loss and
RTT graphs and the drain state, and sends the admin token on every /api/stats request. A screenshot
is kept (tests/e2e/artifacts/dashboard-live.png)."""
from __future__ import annotations

import asyncio

import pytest

from e2e_helpers import new_client_page, open_publisher, open_viewer, wait_for
from page_artifacts import screenshot

pytestmark = pytest.mark.e2e



async def test_dashboard_shows_live_stream(context, server):
    publisher = await open_publisher(context, server, "shop")
    viewer = await open_viewer(context, server, "shop")
    await wait_for(viewer, 's => s.player === "live" && s.video.framesDecoded > 5', what="playing",
                   pages=[publisher])

    admin_token = server.mint_admin_token()
    dash = await new_client_page(context, "dashboard")
    auth_headers: list[str | None] = []
    dash.page.on("request", lambda r: auth_headers.append(r.headers.get("authorization"))
                 if r.url.endswith("/api/stats") else None)
    await dash.goto(f"{server.http_url}/static/dashboard.html?token={admin_token}")

    # At least three refreshes so the graphs have points, with the publisher's bitrate measured.
    card = 'section.card[data-stream="shop"]'
    await _wait_page(dash, f"""() => window.dashboard.updates >= 3 && (() => {{
        const c = document.querySelector('{card}');
        if (!c) return false;
        const video = c.querySelector('tr[data-rid="video"]');
        return video !== null && /kbit\\/s/.test(video.children[3].textContent) &&
               video.querySelector('td.viewers').textContent === "1" &&
               c.querySelectorAll('svg.spark polyline').length >= 3;
    }})()""", "the stream's card with its video layer, 1 viewer and graphs")

    text = await dash.page.text_content(card)
    assert "live" in text and "1 viewer" in text, text
    video_row = await dash.page.locator(f'{card} tr[data-rid="video"] td').all_text_contents()
    assert video_row[1] == "640×480" and video_row[2].endswith(" fps") and int(video_row[3].split()[0]) > 0, video_row
    assert int(video_row[4]) > 0 and video_row[7] == "1", video_row  # packets, viewers on the layer
    viewer_row = await dash.page.locator(f"{card} table.viewer-table tbody tr").all_text_contents()
    assert len(viewer_row) == 1, viewer_row  # the one viewer, by its public id
    (handle,) = [h for h, s in server.stats()["sessions"].items() if s["kind"] == "whep"]
    assert await dash.page.locator(f'{card} tr[data-viewer="{handle}"]').count() == 1
    captions = await dash.page.locator(f"{card} figcaption").all_text_contents()
    assert captions == ["publisher bitrate", "loss, publisher leg", "RTT, publisher leg",
                        "loss, viewers (mean)", "RTT, viewers (mean)"], captions
    assert (await dash.page.text_content("#drain")) == "serving"
    assert (await dash.page.text_content("#n-streams")) == "1"
    # The token travels as a Bearer credential on every stats request, and leaves the address bar.
    assert auth_headers and set(auth_headers) == {f"Bearer {admin_token}"}, auth_headers
    assert "token=" not in dash.page.url
    await screenshot(dash.page, "dashboard", "live")

    await publisher.stop()
    await _wait_page(dash, f"""() => {{ const c = document.querySelector('{card}');
        return c === null || c.textContent.includes("not live"); }}""", "the stream no longer live")


async def _wait_page(cp, js: str, what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await cp.page.evaluate(js):
        if loop.time() > deadline:
            state = await cp.page.evaluate("() => JSON.stringify({error: window.dashboard.error, "
                                           "updates: window.dashboard.updates})")
            raise AssertionError(f"dashboard: timed out waiting for {what}: {state}\n{await cp.describe()}")
        await asyncio.sleep(0.2)
