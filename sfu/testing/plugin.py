"""pytest plugin: sfu as a local stage for integration tests (registered as the `pytest11`
entry point `sfu`, so it loads once the package is installed).

Fixtures (all function-scoped, all synchronous, so they work in sync tests and async ones, with
or without pytest-asyncio, whatever its mode):

- `sfu_server`: an in-process server on ephemeral loopback ports (a fresh one per test), or the
  external node given by `--sfu-url` / ini `sfu_url`. `.whip_url(s)`, `.whep_url(s)`,
  `.token(s, publish=...)`, `.stats()`, `.http_url`.
- `sfu_server_factory(**config)`: more in-process servers with chosen `sfu.Config` fields.
- `sfu_publisher(stream, source=None, **kw)` / `sfu_viewer(stream, **kw)`: connected clients
  (`PacketPublisher`, `FilePublisher` when `source` names media files, `PacketViewer`) behind a
  `ClientHandle` with blocking methods; all stopped at teardown.
- `sfu_stream`: a stream name unique to the test (for shared external servers).
- `sfu_fake_clock`, `sfu_netem(**link)`: the fake clock and seeded network emulator.

How it runs: each test that uses a server or client fixture gets a `Stage`, an asyncio loop in a
thread of its own; servers and clients live on it, and the fixtures' methods hand work to it and
wait for the result. The test's own thread (and its event loop, if any) is never blocked by the
server, so a Playwright or requests-based test works against `sfu_server` too. At teardown the
clients are stopped (DELETE), then the servers, then the loop; tasks still pending on it then are
a leak and fail the teardown.

Importing this module imports neither the server, nor `sfu._fastpath`, nor aiohttp, nor PyAV:
fixtures import what they use when first requested.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import inspect
import json
import os
import sys
import threading
import traceback
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pytest

if TYPE_CHECKING:
    from sfu.app import Server
    from sfu.config import Config
    from sfu.testing.clock import FakeClock
    from sfu.testing.depacketize import EncodedFrame
    from sfu.testing.frames import DecodedFrame
    from sfu.testing.netem import Link
    from sfu.testing.publisher import PacketPublisher  # noqa: F401  (in ClientHandle["..."])
    from sfu.testing.viewer import PacketViewer  # noqa: F401

T = TypeVar("T")
C = TypeVar("C")
H = TypeVar("H", bound="ClientHandle[Any]")

STAGE_CALL_TIMEOUT_S = 60.0  # no stage call should take longer; a hung one fails the test
STOP_TIMEOUT_S = 10.0  # per client / server at teardown
DEFAULT_WAIT_FOR_PUBLISHER_S = 10.0  # a fixture viewer retries 409 (not live) this long


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sfu", "sfu media server fixtures")
    group.addoption(
        "--sfu-url", dest="sfu_url", default=None, metavar="URL",
        help="run the sfu fixtures against this external node (base URL, e.g. http://10.0.0.5:8080) "
             "instead of an in-process server",
    )
    group.addoption(
        "--sfu-token-secret", dest="sfu_token_secret", default=None, metavar="SECRET",
        help="the external node's token secret, to mint publish/subscribe tokens "
             "(or $SFU_TOKEN_SECRET)",
    )
    group.addoption(
        "--sfu-token-kid", dest="sfu_token_kid", default=None, metavar="KID",
        help='key id to sign tokens for the external node with (default "default": its token_secret)',
    )
    parser.addini("sfu_url", "external sfu node for the sfu fixtures (same as --sfu-url)", default=None)
    parser.addini("sfu_token_secret", "token secret of the external sfu node", default=None)
    parser.addini("sfu_token_kid", "key id of that secret on the external node", default=None)


def pytest_report_header(config: pytest.Config) -> str | None:
    url = _external_url(config)
    return f"sfu: fixtures use the external node {url}" if url else None


ASYNC_MARKS = ("asyncio", "anyio", "trio")  # a test with one of these already has its runner


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """An `async def` test that uses sfu fixtures runs under pytest-asyncio whatever its mode:
    in strict mode (the default) such a test would otherwise need `@pytest.mark.asyncio`. Tests
    marked for anyio or trio, and tests without sfu fixtures, are left alone."""
    if not inspect.iscoroutinefunction(obj) or not collector.config.pluginmanager.has_plugin("asyncio"):
        return
    if not collector.funcnamefilter(name):  # type: ignore[attr-defined]
        return
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return
    if not any(p.startswith("sfu_") for p in parameters):
        return
    marks = list(getattr(obj, "pytestmark", []))
    module = getattr(collector, "obj", None)
    module_marks = getattr(module, "pytestmark", [])
    marks += module_marks if isinstance(module_marks, list) else [module_marks]
    if any(getattr(m, "name", None) in ASYNC_MARKS for m in marks):
        return
    pytest.mark.asyncio(obj)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Without pytest-asyncio installed, run an unmarked `async def` test that uses sfu fixtures
    in a fresh event loop (`asyncio.run`), instead of pytest's "not natively supported" skip."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    if not any(name.startswith("sfu_") for name in pyfuncitem.fixturenames):
        return None
    if any(pyfuncitem.get_closest_marker(mark) for mark in ASYNC_MARKS):
        return None
    if pyfuncitem.config.pluginmanager.has_plugin("asyncio"):
        return None  # pytest-asyncio runs it (`pytest_pycollect_makeitem` above marked it)
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**arguments))
    return True


def _external_url(config: pytest.Config) -> str | None:
    return config.getoption("sfu_url", None) or config.getini("sfu_url") or None


def _external_secret(config: pytest.Config) -> str | None:
    return (config.getoption("sfu_token_secret", None) or config.getini("sfu_token_secret")
            or os.environ.get("SFU_TOKEN_SECRET") or None)


# ---------------------------------------------------------------------------------------
# the stage: a loop in a thread


class Stage:
    """An asyncio event loop in a daemon thread; `run(coro)` / `call(fn)` from any other thread."""

    def __init__(self, name: str = "sfu-stage") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = STAGE_CALL_TIMEOUT_S) -> T:
        """Run `coro` on the stage loop and wait for its result (re-raising its exception)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Stage.run called from the stage loop itself (would deadlock)")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"stage call did not finish within {timeout}s; the stage loop is at:\n"
                               f"{self.where()}") from None

    def where(self) -> str:
        """The stage thread's current stack (what a slow or blocked loop is doing)."""
        frame = sys._current_frames().get(self._thread.ident or -1)
        return "".join(traceback.format_stack(frame)[-12:]) if frame is not None else "(thread gone)"

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a plain function on the stage loop (for reading state the loop mutates)."""

        async def _call() -> T:
            return fn(*args)

        return self.run(_call())

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `coro` on the stage loop without waiting."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> list[str]:
        """Cancel what is left, stop the loop and the thread; returns the tasks that were left."""
        if self._closed:
            return []
        self._closed = True

        async def _leftovers() -> list[str]:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            await self.loop.shutdown_asyncgens()
            return [repr(t.get_coro()) for t in tasks]

        try:
            left = self.run(_leftovers(), timeout=STOP_TIMEOUT_S * 2)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(STOP_TIMEOUT_S)
            if not self._thread.is_alive():
                self.loop.close()
        return left


# ---------------------------------------------------------------------------------------
# servers


class StageServer:
    """What the fixtures give for a server: its URLs, tokens and stats. Local or external."""

    http_url: str

    def whip_url(self, stream: str) -> str:
        return f"{self.http_url}/whip/{stream}"

    def whep_url(self, stream: str) -> str:
        return f"{self.http_url}/whep/{stream}"

    def token(self, stream: str, *, publish: bool = False, subscribe: bool = False, ttl_s: float = 3600.0,
              participant: str | None = None) -> str:
        """A JWT for `stream` (a name or pattern) with the given capabilities."""
        return self._keys().mint(stream, publish=publish, subscribe=subscribe, ttl_s=ttl_s,
                                 participant=participant)

    def admin_token(self, ttl_s: float = 3600.0) -> str:
        """A JWT with the admin capability (`/api/stats`, `/metrics`, `/admin/...`)."""
        return self._keys().mint("*", admin=True, ttl_s=ttl_s)

    def _keys(self) -> Any:  # sfu.keys.KeySet
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """The node's stats document (`/api/stats`): streams, sessions, counters."""
        raise NotImplementedError


class LocalServer(StageServer):
    """An in-process `sfu.Server` running on the test's stage loop."""

    def __init__(self, stage: Stage, config: Config) -> None:
        from sfu.app import Server

        self.stage = stage
        self.config = config
        self.server: Server = Server(config)
        stage.run(self.server.start())
        self.http_url = self.server.http_url
        self.udp_port = self.server.udp_port

    def _keys(self) -> Any:
        assert self.server.keys is not None
        return self.server.keys

    def stats(self) -> dict[str, Any]:
        return self.stage.call(self.server.stats)

    def stop(self) -> None:
        self.stage.run(self.server.stop(), timeout=STOP_TIMEOUT_S)

    def __repr__(self) -> str:
        return f"<LocalServer {self.http_url} udp {self.udp_port}>"


class ExternalServer(StageServer):
    """A node the tests do not start (`--sfu-url`); tokens are minted with its secret
    (`--sfu-token-secret`, signed under the key id `--sfu-token-kid`, "default" for a node
    configured with a plain `token_secret`)."""

    def __init__(self, url: str, secret: str | None, kid: str | None = None) -> None:
        self.http_url = url.rstrip("/")
        self.secret = secret
        self.kid = kid

    def _keys(self) -> Any:
        from sfu.keys import LEGACY_KID, KeySet

        if not self.secret:
            raise pytest.UsageError(
                "minting tokens for the external sfu node needs its secret: --sfu-token-secret, "
                "ini sfu_token_secret or $SFU_TOKEN_SECRET"
            )
        return KeySet([(self.kid or LEGACY_KID, self.secret)])

    def stats(self) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.http_url}/api/stats", headers={"Authorization": f"Bearer {self.admin_token(ttl_s=60)}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def __repr__(self) -> str:
        return f"<ExternalServer {self.http_url}>"


# ---------------------------------------------------------------------------------------
# clients


class ClientHandle(Generic[C]):
    """A client made by `sfu_publisher` / `sfu_viewer`, living on the stage loop, with blocking
    methods for the test's thread. `.client` is the object itself (read its attributes; call
    its coroutines only through `run`)."""

    def __init__(self, stage: Stage, client: C) -> None:
        self.stage = stage
        self.client = client
        self._connect: concurrent.futures.Future[None] | None = None

    def _begin(self) -> None:
        self._connect = self.stage.submit(self.client.start())  # type: ignore[attr-defined]

    def wait_connected(self, timeout: float = 30.0) -> None:
        """Block until ICE + DTLS are done (re-raises WhipError / WhepError / ConnectionError)."""
        assert self._connect is not None
        try:
            self._connect.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"not connected within {timeout}s") from None

    def run(self, make: Callable[[C], Coroutine[Any, Any, T]], timeout: float = STAGE_CALL_TIMEOUT_S) -> T:
        """`handle.run(lambda c: c.some_coroutine(...))`: run one of the client's coroutines."""
        return self.stage.run(make(self.client), timeout)

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the client's `stats`, taken on its loop."""
        return self.stage.call(lambda: self.client.stats)  # type: ignore[attr-defined]

    def wait_for(self, predicate: Callable[[C], object], timeout: float = 10.0) -> None:
        """Block until `predicate(client)` is true (evaluated on the client's loop, connected or
        not yet); TimeoutError with the client's stats at the deadline, or the connection's own
        error (WhipError, WhepError, ConnectionError) if connecting failed meanwhile."""
        client = self.client
        self._waiting(lambda c: c.wait_for(lambda: bool(predicate(client)), timeout), timeout)  # type: ignore[attr-defined]

    def _waiting(self, make: Callable[[C], Coroutine[Any, Any, None]], timeout: float) -> None:
        self._raise_if_failed()
        try:
            self.run(make, timeout + STOP_TIMEOUT_S)
        except TimeoutError:
            self._raise_if_failed()
            raise

    def _raise_if_failed(self) -> None:
        if self._connect is not None and self._connect.done() and not self._connect.cancelled():
            error = self._connect.exception()
            if error is not None:
                raise error

    def request_keyframe(self) -> None:
        self.stage.call(self.client.request_keyframe)  # type: ignore[attr-defined]

    def stop(self) -> None:
        """DELETE the session and close the sockets (also done at teardown)."""
        if self._connect is not None and not self._connect.done():
            self._connect.cancel()
        self.stage.run(self.client.stop(), timeout=STOP_TIMEOUT_S)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<ClientHandle {self.client!r}>"


class PublisherHandle(ClientHandle["PacketPublisher"]):
    """A publisher from `sfu_publisher` (a `PacketPublisher` or a `FilePublisher`)."""

    def wait_finished(self, timeout: float = 60.0) -> None:
        """A `FilePublisher` without `loop`: block until its last frame was sent."""
        self.wait_for(lambda c: getattr(c, "finished", False), timeout)


class ViewerHandle(ClientHandle["PacketViewer"]):
    """A viewer from `sfu_viewer`."""

    def wait_for_frames(self, count: int, timeout: float = 10.0, *, kind: str = "video",
                        decoded: bool | None = None) -> None:
        """Block until `count` frames of `kind` arrived (see `PacketViewer.wait_for_frames`)."""
        self._waiting(lambda c: c.wait_for_frames(count, timeout, kind=kind, decoded=decoded), timeout)

    def decoded_frames(self, kind: str = "video") -> list[DecodedFrame]:
        return self.stage.call(self.client.decoded_frames, kind)

    def encoded_frames(self, kind: str = "video") -> list[EncodedFrame]:
        return self.stage.call(self.client.encoded_frames, kind)

    def write_video(self, path: str | Path) -> Path:
        return self.stage.call(self.client.write_video, path)

    def select_layer(self, layer: str | None = None, *, max_height: int | None = None,
                     paused: bool | None = None) -> None:
        """Ask for a simulcast layer, a height cap, a pause, or automatic (no argument)."""
        self.wait_connected()
        self.run(lambda c: c.select_layer(layer, max_height=max_height, paused=paused))


class _Clients:
    """The clients one test made, stopped at teardown (newest first)."""

    def __init__(self) -> None:
        self.handles: list[ClientHandle[Any]] = []

    def stop_all(self) -> list[str]:
        errors = []
        for handle in reversed(self.handles):
            try:
                handle.stop()
            except Exception as exc:  # keep stopping the others; reported by the caller
                errors.append(f"{handle!r}: {exc!r}")
        self.handles.clear()
        return errors

    def start(self, handle: H, wait: bool) -> H:
        """Keep `handle` for teardown, start it, and (with `wait`) wait until it is connected."""
        self.handles.append(handle)
        handle._begin()
        if wait:
            handle.wait_connected()
        return handle

    def teardown(self, fixture: str) -> None:
        """Stop every client; a failure to stop fails the test that made them."""
        errors = self.stop_all()
        if errors:
            pytest.fail(f"{fixture} teardown: {errors}", pytrace=False)


# ---------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def _sfu_stage() -> Iterator[Stage]:
    stage = Stage()
    yield stage
    left = stage.close()
    if left:
        pytest.fail(f"sfu fixtures: tasks left on the stage loop at teardown: {left}", pytrace=False)


@pytest.fixture
def sfu_server_factory(request: pytest.FixtureRequest, _sfu_stage: Stage) -> Iterator[Callable[..., LocalServer]]:
    """`sfu_server_factory(**fields)`: start an in-process server whose `sfu.Config` is
    `Config.for_tests()` with these fields replaced (e.g. `viewer_token_required=True`,
    `keyframe_cache=False`, `max_sessions=2`, `whep_wait_for_publisher=True`). All are stopped at
    teardown. Not available with `--sfu-url` (the test is skipped: it needs its own server)."""
    if _external_url(request.config):
        pytest.skip("sfu_server_factory starts local servers; not available with --sfu-url")
    servers: list[LocalServer] = []

    def make(**fields: Any) -> LocalServer:
        from sfu.config import Config

        config = dataclasses.replace(Config.for_tests(), **fields)
        server = LocalServer(_sfu_stage, config)
        servers.append(server)
        return server

    yield make
    if _CLIENTS_KEY in request.node.stash:  # clients first, whichever fixture made them
        request.node.stash[_CLIENTS_KEY].stop_all()
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def sfu_server(request: pytest.FixtureRequest) -> StageServer:
    """The server under test: a fresh in-process one per test, or the `--sfu-url` node."""
    url = _external_url(request.config)
    if url:
        kid = request.config.getoption("sfu_token_kid", None) or request.config.getini("sfu_token_kid") or None
        return ExternalServer(url, _external_secret(request.config), kid)
    factory = request.getfixturevalue("sfu_server_factory")
    return factory()


_CLIENTS_KEY = pytest.StashKey[_Clients]()


def _clients(request: pytest.FixtureRequest) -> _Clients:
    stash = request.node.stash
    if _CLIENTS_KEY not in stash:
        stash[_CLIENTS_KEY] = _Clients()
    return stash[_CLIENTS_KEY]


@pytest.fixture
def sfu_publisher(request: pytest.FixtureRequest, sfu_server: StageServer, _sfu_stage: Stage
                  ) -> Iterator[Callable[..., PublisherHandle]]:
    """`sfu_publisher(stream="live", source=None, *, server=None, token=None, wait=True, **kw)`:
    a connected publisher. Without `source`: a `PacketPublisher` of synthetic RTP (kw:
    `video_codec`, `audio`, `bitrate`, `fps`, `simulcast_rids`, ...); with `source` (a path or a
    list of paths for simulcast): a `FilePublisher` (kw: `loop`, `rids`). `token` defaults to a
    publish token minted for the stream; `wait=False` returns while it connects."""
    clients = _clients(request)

    def make(stream: str = "live", source: str | Path | list[str | Path] | None = None, *,
             server: StageServer | None = None, token: str | None = None, wait: bool = True,
             **kwargs: Any) -> PublisherHandle:
        target = server or sfu_server
        token = token if token is not None else target.token(stream, publish=True)
        if source is not None:
            from sfu.testing.file_publisher import FilePublisher

            client: Any = FilePublisher(target.whip_url(stream), token, source, **kwargs)
        else:
            from sfu.testing.publisher import PacketPublisher

            client = PacketPublisher(target.whip_url(stream), token, **kwargs)
        return clients.start(PublisherHandle(_sfu_stage, client), wait)

    yield make
    clients.teardown("sfu_publisher")


@pytest.fixture
def sfu_viewer(request: pytest.FixtureRequest, sfu_server: StageServer, _sfu_stage: Stage
               ) -> Iterator[Callable[..., ViewerHandle]]:
    """`sfu_viewer(stream="live", *, server=None, token=None, wait=True, decode=False, **kw)`:
    a connected `PacketViewer`. It retries while the stream is not live (409) for
    `wait_for_publisher` s (10 by default): with `wait=False` it returns at once and keeps
    trying in the background, so a viewer may be made before its publisher. `decode=True`
    reassembles and decodes frames with PyAV; `frames=True` reassembles only."""
    clients = _clients(request)

    def make(stream: str = "live", *, server: StageServer | None = None, token: str | None = None,
             wait: bool = True, **kwargs: Any) -> ViewerHandle:
        from sfu.testing.viewer import PacketViewer

        target = server or sfu_server
        kwargs.setdefault("wait_for_publisher", DEFAULT_WAIT_FOR_PUBLISHER_S)
        if token is None and getattr(getattr(target, "config", None), "viewer_token_required", False):
            token = target.token(stream, subscribe=True)
        return clients.start(ViewerHandle(_sfu_stage, PacketViewer(target.whep_url(stream), token, **kwargs)), wait)

    yield make
    clients.teardown("sfu_viewer")


@pytest.fixture
def sfu_stream(request: pytest.FixtureRequest) -> str:
    """A stream name unique to this test (and this run), safe on a shared external node."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    return f"t{digest}{os.urandom(3).hex()}"


@pytest.fixture
def sfu_fake_clock() -> FakeClock:
    """A `FakeClock` at 0.0 (see `sfu.testing.clock`)."""
    from sfu.testing.clock import FakeClock

    return FakeClock()


@pytest.fixture
def sfu_netem() -> Callable[..., Link]:
    """`sfu_netem(delay=0.025, jitter=0, loss=0, duplicate=0, reorder=0, seed=1)`: a seeded
    network emulator link (see `sfu.testing.netem.Link`): same seed, same run."""
    from sfu.testing.netem import Link

    return Link
