"""HTTPS with a real browser (issue 13, point 8): Chromium publishes and watches over https with
`tls_cert` / `tls_key`; opened over plain http from another host, publish.html says in words why it
cannot use the camera instead of failing with a JavaScript error."""
from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

import sfu
from e2e_helpers import CHROMIUM, CHROMIUM_ARGS, VIDEO_DECODED, open_publisher, open_viewer, page_url, wait_for
from sfu.testing.certs import self_signed

pytestmark = pytest.mark.e2e


async def test_chromium_publishes_and_watches_over_https(context, tmp_path):
    cert, key = self_signed(tmp_path)
    config = dataclasses.replace(sfu.Config.for_tests(), tls_cert=str(cert), tls_key=str(key))
    async with sfu.Server(config) as server:
        assert server.http_url.startswith("https://")
        publisher = await open_publisher(context, server, "secure")
        viewer = await open_viewer(context, server, "secure")
        await wait_for(viewer, VIDEO_DECODED, what="decoded video over https signalling", pages=[publisher])
        state = await publisher.state()
        assert state["location"].startswith("https://"), state["location"]


async def test_publish_page_from_an_insecure_origin_says_so_in_words(server):
    """`sfu.test` resolves to the loopback server but is not a secure context (only localhost,
    127.0.0.0/8 and https are)."""
    from playwright.async_api import async_playwright

    port = server.http_port
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP sfu.test 127.0.0.1"],
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            url = page_url(server, "publish.html", {"stream": "x", "token": server.mint_token("x", publish=True)})
            await page.goto(url.replace(f"127.0.0.1:{port}", f"sfu.test:{port}"))
            deadline = time.monotonic() + 20
            while not (message := await page.evaluate("() => window.sfu ? window.sfu.error : null")):
                assert time.monotonic() < deadline, "the page never said why it cannot publish"
                await asyncio.sleep(0.1)
            assert "plain http" in message and "https://" in message and "--tls-cert" in message, message
            shown = await page.evaluate("() => document.body.innerText")
            assert "plain http" in shown
            assert errors == []  # no uncaught JavaScript error
            assert not await page.evaluate("() => window.isSecureContext")
        finally:
            await browser.close()
