"""Fixtures for the end-to-end tests: a real server on loopback, headless Chromium, GStreamer.

Chromium is Debian's (/usr/bin/chromium); a browser is never downloaded. Without it the tests fail
(they do not skip): `make test` run as root installs it.
"""
from __future__ import annotations

import os
import sys
from typing import Any
from collections.abc import AsyncIterator

import pytest

from e2e_helpers import CHROMIUM, CHROMIUM_ARGS

import sfu


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
async def server() -> AsyncIterator[Any]:
    async with sfu.Server(sfu.Config.for_tests()) as server:
        yield server


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Debian Chromium with a fake camera and microphone (a new browser per test)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make test` as root, which installs Debian's chromium "
                    "(the end-to-end tests never download a browser)", pytrace=False)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def context(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A fresh browser context per test. If the test failed, every page's window.sfu state and
    console log are printed."""
    ctx = await browser.new_context(permissions=["camera", "microphone"], ignore_https_errors=True)
    try:
        yield ctx
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            for page in ctx.pages:
                cp = getattr(page, "_sfu_client", None)
                if cp is not None:
                    print(await cp.describe(), file=sys.stderr)
        await ctx.close()
