"""The pytest plugin (`sfu.testing.plugin`, entry point `pytest11: sfu`) as other projects use it,
checked with pytest's own `pytester`: downstream test files that use only the fixtures, run in a
separate pytest process with no configuration of theirs (pytest-asyncio in its default strict
mode), then once from a clean virtual environment where the project is pip-installed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import venv
from pathlib import Path

import pytest

from sfu.testing.plugin import LocalServer, Stage

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "test_live_shop.py"
BROWSER_EXAMPLE = ROOT / "docs" / "examples" / "test_browser.py"
CHROMIUM = "/usr/bin/chromium"  # Debian's, as the e2e tests use (make test installs it)
RUN_TIMEOUT_S = 300


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # a separate process: the plugin loads from the entry point, as in a downstream project
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=RUN_TIMEOUT_S)


def test_the_documented_example_passes_as_pasted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_live_shop=EXAMPLE.read_text())
    result = _run(pytester)
    result.assert_outcomes(passed=4)


def _readme_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Embed it") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def test_the_readme_snippet_passes_as_pasted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_readme=_readme_snippet())
    _run(pytester).assert_outcomes(passed=2)


def test_the_examples_in_the_docs_are_the_tested_files() -> None:
    docs = (ROOT / "docs" / "embedding.md").read_text()
    assert EXAMPLE.read_text().strip() in docs
    assert BROWSER_EXAMPLE.read_text().strip() in docs


@pytest.mark.e2e
def test_the_browser_recipe_passes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/examples/test_browser.py: Chromium (Debian's, never downloaded) watches a VP8 file
    published through the fixture's server and shows its 320-pixel-wide pictures."""
    monkeypatch.setenv("CHROMIUM", CHROMIUM)
    pytester.makepyfile(test_browser=BROWSER_EXAMPLE.read_text())
    _run(pytester).assert_outcomes(passed=1)


def test_loading_the_plugin_imports_neither_server_nor_aiohttp(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        HEAVY = {"aiohttp", "av", "sfu.app", "sfu._fastpath", "sfu.core.sessions", "sfu.io.udp",
                 "sfu.testing.viewer"}

        def test_1_plugin_loaded_and_nothing_heavy(request):
            assert request.config.pluginmanager.has_plugin("sfu")
            assert sorted(HEAVY & set(sys.modules)) == []

        def test_2_a_fixture_imports_the_server(sfu_server):
            assert "sfu.app" in sys.modules and "sfu._fastpath" in sys.modules
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=2)


def test_a_failing_downstream_assertion_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_wrong_expectation(sfu_server, sfu_publisher, sfu_viewer):
            sfu_publisher("shop1")
            sfu_viewer("shop1").wait_for_frames(5)
            assert sfu_server.stats()["streams"]["shop1"]["viewers"] == 2

        def test_frames_that_never_come(sfu_viewer):
            sfu_viewer("nobody", wait_for_publisher=0.3)
        """
    )
    result = _run(pytester)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*assert 1 == 2*", "*WhepError: HTTP 409*"])


CLEANUP_CHECK = '''
import os
import threading

import pytest

from sfu.testing import wait_until

SEEN = {}


def _fds():
    return sorted(os.listdir("/proc/self/fd"))


@pytest.fixture
def probe(sfu_server):
    # set up after the server, torn down after the clients and before the server
    yield
    SEEN["server"] = sfu_server
    SEEN["sessions_at_client_teardown"] = wait_until(
        lambda: not sfu_server.stats()["sessions"] and "none", timeout=5)


def test_0_baseline():
    SEEN["fds"] = _fds()
    SEEN["threads"] = threading.active_count()


def test_1_use_everything(probe, sfu_server, sfu_publisher, sfu_viewer, sfu_server_factory):
    other = sfu_server_factory(keyframe_cache=False)
    SEEN["clients"] = [sfu_publisher("a"), sfu_viewer("a"), sfu_publisher("b", server=other),
                       sfu_viewer("b", server=other, wait=False)]
    SEEN["clients"][1].wait_for_frames(10)
    SEEN["clients"][3].wait_for_frames(10)
    SEEN["other"] = other
    SEEN["stage"] = other.stage
    assert len(sfu_server.stats()["sessions"]) == 2


def test_2_nothing_left():
    assert SEEN["sessions_at_client_teardown"] == "none"
    stage = SEEN["stage"]
    assert not stage._thread.is_alive() and stage.loop.is_closed()
    for server in (SEEN["server"], SEEN["other"]):
        assert server.server.media is None and server.server._runner is None
        assert not server.server.manager.sessions
    for handle in SEEN["clients"]:
        client = handle.client
        assert client._closed and all(p.transport.is_closing() for p in client._sockets)
        assert client._http is None or client._http.closed
    # every socket, pipe and thread the test made is gone
    assert threading.active_count() == SEEN["threads"]
    assert _fds() == SEEN["fds"]
'''


def test_fixtures_leave_no_sessions_sockets_threads_or_tasks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cleanup=CLEANUP_CHECK)
    result = _run(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=3)  # a task left on the stage loop would be a teardown error


def test_a_task_left_on_the_stage_loop_fails_the_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio

        def test_leaks_a_task(sfu_server):
            async def forever():
                await asyncio.Event().wait()
            sfu_server.stage.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(forever()))
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*tasks left on the stage loop at teardown*forever*"])


def test_parallel_runs_do_not_collide(pytester: pytest.Pytester) -> None:
    """Two pytest processes at once, same stream names: each has its own servers on their own ports."""
    pytester.makepyfile(test_live_shop=EXAMPLE.read_text())
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not private"],
            cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=RUN_TIMEOUT_S)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
        assert re.search(r"\b3 passed\b", output), output


def test_external_server_mode(pytester: pytest.Pytester) -> None:
    """`--sfu-url` + `--sfu-token-secret`: the same fixtures against a node the tests do not start
    (here one run by this test); tests that need their own server are skipped, saying why."""
    from sfu.config import Config

    stage = Stage("external-node")
    try:
        node = LocalServer(stage, Config.for_tests())
        pytester.makepyfile(test_live_shop=EXAMPLE.read_text())
        result = _run(pytester, "-rs", f"--sfu-url={node.http_url}", f"--sfu-token-secret={node.server.token_secret}")
        result.assert_outcomes(passed=3, skipped=1)
        result.stdout.fnmatch_lines([
            f"sfu: fixtures use the external node {node.http_url}",
            "*sfu_server_factory starts local servers; not available with --sfu-url*",
        ])
        # the ini setting works the same; without the secret, minting a token is a usage error
        pytester.makeini(f"[pytest]\nsfu_url = {node.http_url}\n")
        result = _run(pytester, "-k", "buyers_see")
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*needs its secret: --sfu-token-secret*"])
        assert node.stats()["sessions"] == {}  # the runs cleaned up after themselves on the node
    finally:
        node.stop()
        assert stage.close() == []
    assert threading.active_count() >= 1


def test_fake_clock_and_netem_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_deterministic(sfu_fake_clock, sfu_netem):
            link = sfu_netem(delay=0.05, jitter=0.01, loss=0.2, seed=3)
            for i in range(100):
                link.send(sfu_fake_clock(), i)
                sfu_fake_clock.advance(0.001)
            sfu_fake_clock.advance(1.0)
            got = link.receive(sfu_fake_clock())
            again = sfu_netem(delay=0.05, jitter=0.01, loss=0.2, seed=3)
            for i in range(100):
                again.send(i * 0.001, i)
            assert got == again.receive(10.0) and 0 < link.lost < 100 and len(got) == 100 - link.lost
        """
    )
    _run(pytester).assert_outcomes(passed=1)


def test_clean_venv_pip_install_then_the_documented_example(tmp_path: Path) -> None:
    """From a clean virtual environment in a temporary folder: `pip install` of this checkout
    (with the `media` extra, compiling the fast path) and pytest, then the documented example,
    found through the entry point with no configuration. Slow: ~2.5 min on a shared 2-core host,
    mostly pip."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{ROOT}[media]", "pytest"],
        capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    work = tmp_path / "project"
    work.mkdir()
    (work / "test_live_shop.py").write_text(EXAMPLE.read_text())
    run = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=work,
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert re.search(r"\b4 passed\b", run.stdout), run.stdout
