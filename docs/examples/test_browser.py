"""A browser watches through sfu: Playwright against the fixture's server.

pip install "sfu[media]" pytest playwright   (a Chromium: `playwright install chromium`, or a
system one named by $CHROMIUM). With pytest-playwright installed, its `page` fixture replaces
the one below.
"""

import os

import pytest
from playwright.sync_api import sync_playwright

from sfu.testing import testmedia


@pytest.fixture
def page():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=os.environ.get("CHROMIUM"), args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        yield browser.new_page()
        browser.close()


def test_watch_page_shows_the_pictures(sfu_server, sfu_publisher, page, tmp_path):
    clip = testmedia.make_test_file(tmp_path / "clip.webm", video="VP8", frames=60, gop=30)
    sfu_publisher("shop1", source=clip, loop=True)  # real VP8 + Opus, a keyframe every second
    page.goto(f"{sfu_server.http_url}/static/watch.html?stream=shop1")  # or your own player page
    page.wait_for_function("() => document.querySelector('video').videoWidth === 320", timeout=20000)
    assert sfu_server.stats()["streams"]["shop1"]["viewers"] == 1
