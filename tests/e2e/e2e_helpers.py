"""Helpers for the end-to-end tests: real, independent clients against a real in-process server.

- Chromium pages (sfu/web/publish.html and watch.html) driven through Playwright; each page exposes
  `window.sfu` (state, error, pc, location, stats()) which is what the tests read.
- An OBS-like GStreamer publisher (gst_whip_publisher.py) run under Debian's /usr/bin/python3, the
  one with python3-gi (the venv's Python cannot import gi).

Every wait is a condition with a deadline; a failed wait reports the page's `window.sfu` state and
its console log.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
GST_PYTHON = "/usr/bin/python3"
GST_PUBLISHER = Path(__file__).with_name("gst_whip_publisher.py")

DEFAULT_TIMEOUT_S = 30.0  # a condition not met by then is a failure
POLL_INTERVAL_S = 0.1  # between two window.sfu.stats() polls
CONSOLE_LINES_KEPT = 400  # per page
PROCESS_STOP_TIMEOUT_S = 5.0  # SIGTERM, then SIGKILL

STATS_JS = "async () => window.sfu ? await window.sfu.stats() : null"
STATE_JS = """() => window.sfu ? {
    role: window.sfu.role, state: window.sfu.state, error: window.sfu.error,
    location: window.sfu.location, config: window.sfu.config || null, log: window.sfu.log,
    localSdp: window.sfu.pc && window.sfu.pc.localDescription ? window.sfu.pc.localDescription.sdp : null,
    remoteSdp: window.sfu.pc && window.sfu.pc.remoteDescription ? window.sfu.pc.remoteDescription.sdp : null,
} : null"""
# Evaluate a JS predicate (the source of a function of the stats summary) inside the page.
PREDICATE_JS = """async (src) => {
    if (!window.sfu) return {ok: false, stats: null, error: null};
    const s = await window.sfu.stats();
    const f = (0, eval)("(" + src + ")");
    return {ok: !!f(s), stats: s, error: window.sfu.error};
}"""


class E2EFailure(AssertionError):
    pass


class ClientPage:
    """A Chromium page running publish.html or watch.html, with its console log kept."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.name = name
        self.url: str | None = None
        self.console: list[str] = []
        page._sfu_client = self  # so that the context fixture can describe every page of a failed test
        t0 = time.monotonic()

        def on_console(msg: Any) -> None:
            self._keep(f"{time.monotonic() - t0:7.3f} {msg.type}: {msg.text}")

        def on_error(err: Any) -> None:
            self._keep(f"{time.monotonic() - t0:7.3f} pageerror: {err}")

        def on_crash(_: Any) -> None:
            self._keep(f"{time.monotonic() - t0:7.3f} PAGE CRASHED")

        page.on("console", on_console)
        page.on("pageerror", on_error)
        page.on("crash", on_crash)

    def _keep(self, line: str) -> None:
        self.console.append(line)
        if len(self.console) > CONSOLE_LINES_KEPT:
            del self.console[: len(self.console) - CONSOLE_LINES_KEPT]

    async def goto(self, url: str) -> None:
        self.url = url
        # Not "load": a <video> element delays the load event until it has a frame (HTML media
        # elements' delaying-the-load-event flag), and for an audio-only stream it never gets one.
        await self.page.goto(url, wait_until="domcontentloaded")

    async def stats(self) -> dict[str, Any] | None:
        return await self.page.evaluate(STATS_JS)

    async def state(self) -> dict[str, Any] | None:
        return await self.page.evaluate(STATE_JS)

    async def stop(self) -> None:
        """Close the peer connection and DELETE the session."""
        await self.page.evaluate("async () => { if (window.sfu && window.sfu.stop) await window.sfu.stop(); }")

    async def close(self) -> None:
        await self.page.close()

    async def describe(self) -> str:
        """window.sfu state, last stats and console log, for failure messages."""
        out = [f"===== page {self.name}: {self.url}"]
        try:
            state = await asyncio.wait_for(self.state(), 5)
            stats = await asyncio.wait_for(self.stats(), 5)
            out.append("window.sfu: " + json.dumps(state, indent=1))
            out.append("stats: " + json.dumps(stats, indent=1))
        except Exception as e:  # the page may have crashed or closed
            out.append(f"(window.sfu unavailable: {e!r})")
        out.append("console:")
        out.extend("  " + line for line in self.console[-150:])
        return "\n".join(out)


def _page_of(page: ClientPage | Any) -> ClientPage:
    if isinstance(page, ClientPage):
        return page
    return ClientPage(page, "page")


# -- pages


def page_url(server: Any, name: str, query: dict[str, Any]) -> str:
    q = {k: ("1" if v is True else "0" if v is False else str(v)) for k, v in query.items() if v is not None}
    return f"{server.http_url}/static/{name}?{urllib.parse.urlencode(q)}"


async def new_client_page(browser: Any, name: str) -> ClientPage:
    """A new page in `browser` (a Browser or a BrowserContext)."""
    return ClientPage(await browser.new_page(), name)


async def open_publisher(
    browser: Any,
    server: Any,
    stream: str,
    codec: str = "VP8",
    simulcast: bool = False,
    audio: bool = True,
    video: bool = True,
    token: str | None = None,
    wait_connected: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    **query: Any,
) -> ClientPage:
    """publish.html publishing the fake camera/microphone over WHIP; by default, waits until connected
    and until media is sent."""
    if token is None:
        token = server.mint_token(stream, publish=True, subscribe=False)
    cp = await new_client_page(browser, f"publisher {stream} {codec}{' simulcast' if simulcast else ''}")
    await cp.goto(page_url(server, "publish.html", dict(
        stream=stream, token=token, codec=codec, simulcast=simulcast, audio=audio, video=video, **query)))
    if wait_connected:
        kind = "video" if video else "audio"
        await wait_for(cp, f"""s => s.connectionState === "connected" &&
            Object.values(s.outbound).some(o => o.kind === "{kind}" && o.bytesSent > 0)""",
                       timeout, what="publisher connected and sending")
    return cp


async def open_viewer(
    browser: Any,
    server: Any,
    stream: str,
    token: str | None = None,
    **query: Any,
) -> ClientPage:
    """watch.html pulling `stream` over WHEP. Does not wait: follow with wait_for(...)."""
    if token is None:
        token = server.mint_token(stream, publish=False, subscribe=True)
    cp = await new_client_page(browser, f"viewer {stream} {query or ''}".strip())
    q = dict(stream=stream, **query)
    if token:
        q["token"] = token
    await cp.goto(page_url(server, "watch.html", q))
    return cp


# -- waiting on conditions

Predicate = str | Callable[[dict[str, Any]], bool]

VIDEO_DECODED = "s => s.video !== null && s.video.framesDecoded > 0"
AUDIO_RECEIVED = "s => s.audio !== null && s.audio.packetsReceived > 0 && s.audio.totalSamplesReceived > 0"


async def wait_for(
    page: ClientPage | Any,
    predicate: Predicate,
    timeout: float = DEFAULT_TIMEOUT_S,
    what: str | None = None,
    pages: Sequence[ClientPage] = (),
    poll_interval: float = POLL_INTERVAL_S,
) -> dict[str, Any]:
    """Poll window.sfu.stats() until `predicate` holds; return the stats that satisfied it.

    `predicate` is either the source of a JS function of the stats summary (evaluated in the page)
    or a Python callable on the stats dict. Fails at once if the page reports an error, and after
    `timeout` seconds otherwise, with the page's state and console log (and those of `pages`).
    """
    cp = _page_of(page)
    what = what or (predicate if isinstance(predicate, str) else getattr(predicate, "__name__", "condition"))
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while True:
        if isinstance(predicate, str):
            res = await cp.page.evaluate(PREDICATE_JS, predicate)
            ok, last, error = res["ok"], res["stats"], res["error"]
        else:
            last = await cp.stats()
            ok = last is not None and bool(predicate(last))
            error = last.get("error") if last else None
        if ok:
            return last  # type: ignore[return-value]
        if error:
            await _fail(f"{cp.name}: page error while waiting for {what}: {error}", [cp, *pages])
        if time.monotonic() >= deadline:
            await _fail(f"{cp.name}: timed out after {timeout:.0f} s waiting for {what}", [cp, *pages])
        await asyncio.sleep(poll_interval)


async def _fail(message: str, pages: Sequence[ClientPage]) -> None:
    details = []
    for p in pages:
        details.append(await p.describe())
    raise E2EFailure(message + "\n" + "\n".join(details))


async def wait_all(
    pages: Sequence[ClientPage], predicate: Predicate, timeout: float = DEFAULT_TIMEOUT_S, what: str | None = None
) -> list[dict[str, Any]]:
    """wait_for on every page, concurrently, with one shared deadline (polling less often when there
    are many pages: getStats() is not free and the pages share the machine with the server)."""
    interval = max(POLL_INTERVAL_S, POLL_INTERVAL_S * len(pages) / 4)
    return list(await asyncio.gather(*(wait_for(p, predicate, timeout, what, poll_interval=interval) for p in pages)))


# -- time to first frame


async def time_to_first_frame(page: ClientPage | Any, timeout: float = DEFAULT_TIMEOUT_S) -> float:
    """Milliseconds from just before the viewer's WHEP POST to its first decoded video frame."""
    s = await wait_for(page, "s => s.firstFrameAt !== null && s.postStartedAt !== null", timeout,
                       what="first decoded video frame")
    return float(s["firstFrameAt"] - s["postStartedAt"])


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize_ms(values: Sequence[float]) -> str:
    return (f"n={len(values)} median={statistics.median(values):.0f} ms p95={percentile(values, 95):.0f} ms "
            f"min={min(values):.0f} ms max={max(values):.0f} ms")


# -- GStreamer publisher


class GstPublisher:
    """The OBS-like GStreamer WHIP publisher as an async context manager.

    Entering starts it and waits until it prints CONNECTED (or fails with its stderr); leaving sends
    SIGTERM (it DELETEs its session and exits 0), then SIGKILL after PROCESS_STOP_TIMEOUT_S. Its
    stderr is printed when the block raised or the process failed.
    """

    def __init__(
        self,
        server: Any,
        stream: str,
        *,
        token: str | None = None,
        key_int_max: int = 60,
        duration: float = 0,
        audio: bool = True,
        video: bool = True,
        ignore_pli: bool = False,
        extra_args: Sequence[str] = (),
        connect_timeout: float = DEFAULT_TIMEOUT_S,
        wait_connected: bool = True,
        netns: str | None = None,
        local_address: str = "127.0.0.1",
        url: str | None = None,
    ) -> None:
        """`netns`: run inside that network namespace (`ip netns exec`), checking from
        `local_address` and POSTing to `url` (an address the namespace reaches)."""
        if token is None:
            token = server.mint_token(stream, publish=True, subscribe=False)
        self.args = [
            GST_PYTHON, "-u", str(GST_PUBLISHER),
            "--url", url or server.whip_url(stream),
            "--token", token,
            "--key-int-max", str(key_int_max),
            "--duration", str(duration),
            "--connect-timeout", str(connect_timeout),
            # the server runs on loopback: check from loopback (libnice skips it by default)
            "--local-address", local_address,
        ]
        if netns is not None:
            self.args[:0] = ["ip", "netns", "exec", netns]
        if not audio:
            self.args.append("--no-audio")
        if not video:
            self.args.append("--no-video")
        if ignore_pli:
            self.args.append("--ignore-pli")
        self.args.extend(extra_args)
        self.connect_timeout = connect_timeout
        self.wait_connected = wait_connected
        self.proc: asyncio.subprocess.Process | None = None
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.connected = asyncio.Event()
        self.frames: int | None = None  # "FRAMES <n>" at exit (--count-frames)
        self.keyframes: list[int] = []  # "KEYS <i> ..." at exit: keyframe indices among those frames
        self._readers: list[asyncio.Task[None]] = []

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    async def _read(self, stream: asyncio.StreamReader, sink: list[str], is_stdout: bool) -> None:
        while True:
            line = await stream.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\n")
            sink.append(text)
            if is_stdout and text.strip() == "CONNECTED":
                self.connected.set()
            if is_stdout and text.startswith("FRAMES "):
                self.frames = int(text.split()[1])
            if is_stdout and text.startswith("KEYS"):
                self.keyframes = [int(i) for i in text.split()[1:]]

    async def __aenter__(self) -> GstPublisher:
        if not os.path.exists(GST_PYTHON):
            raise E2EFailure(f"{GST_PYTHON} is missing: run `make test` as root (it installs python3-gi and GStreamer)")
        env = dict(os.environ)
        # The venv's variables must not leak into Debian's Python.
        for k in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(k, None)
        env.setdefault("GST_DEBUG", "1")
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(self.proc.stdout, self.stdout_lines, True)),
            asyncio.create_task(self._read(self.proc.stderr, self.stderr_lines, False)),
        ]
        if self.wait_connected:
            try:
                await self.wait_until_connected(self.connect_timeout)
            except BaseException:
                await self._stop()
                raise
        return self

    async def wait_until_connected(self, timeout: float) -> None:
        assert self.proc is not None
        connected = asyncio.create_task(self.connected.wait())
        exited = asyncio.create_task(self.proc.wait())
        done, _ = await asyncio.wait({connected, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        connected.cancel()
        exited.cancel()
        if self.connected.is_set():
            return
        if self.proc.returncode is not None:
            await asyncio.gather(*self._readers, return_exceptions=True)
            raise E2EFailure(f"GStreamer publisher exited with {self.proc.returncode} before connecting:\n{self.stderr}")
        raise E2EFailure(f"GStreamer publisher not connected after {timeout:.0f} s:\n{self.stderr}")

    async def _stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), PROCESS_STOP_TIMEOUT_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        return self.proc.returncode

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        code = await self._stop()
        if exc_type is not None or code not in (0, None):
            print(f"----- GStreamer publisher {' '.join(self.args)} exited with {code}; stderr:\n"
                  f"{self.stderr}\n-----", file=sys.stderr)
