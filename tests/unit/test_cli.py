from __future__ import annotations

import os
import signal
import subprocess
import sys
import types
import typing

import pytest

from sfu import __version__
from sfu.cli import banner, main
from sfu.config import Config
from sfu.errors import Forbidden
from sfu.tokens import verify

SECRET = "c" * 32


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("SFU_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # the default secret file lands in tmp_path


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sfu {__version__}"


def test_help_lists_what_exists(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "serve" in out and "token" in out
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--config",
        "--http-host",
        "--http-port",
        "--udp-port",
        "--public-ip",
        "--token-secret",
        "--viewer-token-required",
        "--max-sessions",
        "--no-gso",
        "--overload-queue-delay-ms",
        "--log-level",
    ):
        assert flag in out
    assert main(["token", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--stream", "--publish", "--subscribe", "--ttl", "--participant", "--config", "--secret"):
        assert flag in out


def test_token_with_secret(capsys):
    assert (
        main(["token", "--stream", "shop-*", "--subscribe", "--ttl", "30m", "--participant", "bob", "--secret", SECRET])
        == 0
    )
    token = capsys.readouterr().out.strip()
    claims = verify(SECRET, token, "shop-1", "subscribe")
    assert claims.sub == "bob" and claims.exp - claims.iat == 1800 and claims.caps == {"subscribe"}


def test_token_uses_config_file_secret(tmp_path, capsys):
    path = tmp_path / "sfu.toml"
    path.write_text(f'token_secret = "{SECRET}"\n')
    assert main(["token", "--stream", "live", "--publish", "--config", str(path)]) == 0
    verify(SECRET, capsys.readouterr().out.strip(), "live", "publish")


def test_token_uses_env_secret(monkeypatch, capsys):
    monkeypatch.setenv("SFU_TOKEN_SECRET", SECRET)
    assert main(["token", "--stream", "live", "--publish"]) == 0
    verify(SECRET, capsys.readouterr().out.strip(), "live", "publish")


def test_token_creates_then_reuses_the_secret_file(tmp_path, capsys):
    file = tmp_path / "state" / "secret"
    path = tmp_path / "sfu.toml"
    path.write_text(f'token_secret_file = "{file}"\n')
    assert main(["token", "--stream", "live", "--publish", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "created a new token secret" in captured.err
    secret = file.read_text().strip()
    verify(secret, captured.out.strip(), "live", "publish")
    assert main(["token", "--stream", "live", "--publish", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "created a new token secret" not in captured.err and file.read_text().strip() == secret


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["token", "--stream", "live", "--secret", SECRET], "--publish, --subscribe, --admin"),
        (["token", "--publish", "--secret", SECRET], "--stream"),
        (["token", "--stream", "live", "--publish", "--ttl", "15d", "--secret", SECRET], "--ttl"),
        (["token", "--stream", "live", "--publish", "--ttl", "soon", "--secret", SECRET], "--ttl"),
        (["token", "--stream", "a/b", "--publish", "--secret", SECRET], "stream"),
        (["token", "--stream", "live", "--publish", "--secret", "short"], "at least 32 bytes"),
        (["token", "--stream", "live", "--publish", "--config", "/nonexistent.toml"], "no such file"),
        (["serve", "--http-port", "99999"], "port must be 0-65535"),
        (["serve", "--max-sessions", "-1"], "must be >= 0"),
        (["serve", "--log-level", "loud"], "invalid choice"),
        (["serve", "--overload-queue-delay-ms", "-5", "--token-secret", SECRET], "overload_queue_delay_ms must be 0 (off)"),
        (["serve", "--bogus"], "unrecognized arguments"),
        (["serve", "--bogus"], "usage: sfu serve"),  # the subcommand's usage, not the top level's
        (["token", "--stream", "x", "--publish", "--bogus"], "usage: sfu token"),
        (["bench", "--whip", "http://h/whip", "--whep", "http://h/whep", "--server-args=--no-gso"],
         "--server-args goes with --spawn"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_flags_exit_2_without_traceback(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_serve_bad_config_file_exits_2(tmp_path, capsys):
    path = tmp_path / "sfu.toml"
    path.write_text("http_prot = 80\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert "unknown key 'http_prot'" in capsys.readouterr().err


class FakeServer:
    """Stands in for sfu.app.Server; serve_forever sends SIGTERM to this process, as `kill` would."""

    instances: typing.ClassVar[list[FakeServer]] = []

    def __init__(self, config):
        self.config = config
        self.http_url = "http://0.0.0.0:8080"
        self.udp_port = 8443
        self.entered = self.exited = False
        FakeServer.instances.append(self)

    async def __aenter__(self):
        self.entered = True
        return self

    async def __aexit__(self, *exc):
        self.exited = True

    def whip_url(self, stream):
        return f"{self.http_url}/whip/{stream}"

    def whep_url(self, stream):
        return f"{self.http_url}/whep/{stream}"

    async def serve_forever(self):
        os.kill(os.getpid(), signal.SIGTERM)
        await __import__("asyncio").Event().wait()


def test_serve_runs_the_server_and_stops_cleanly_on_sigterm(monkeypatch, capsys):
    FakeServer.instances.clear()
    monkeypatch.setitem(sys.modules, "sfu.app", types.SimpleNamespace(Server=FakeServer))
    argv = [
        "serve",
        "--public-ip",
        "203.0.113.9",
        "--public-ip",
        "2001:db8::9",
        "--token-secret",
        SECRET,
        "--viewer-token-required",
        "--max-sessions",
        "7",
    ]
    assert main(argv) == 0
    (server,) = FakeServer.instances
    assert server.entered and server.exited
    assert server.config.token_secret == SECRET and server.config.viewer_token_required
    assert server.config.max_sessions == 7 and server.config.public_ips == ["203.0.113.9", "2001:db8::9"]
    out = capsys.readouterr().out
    assert "http://203.0.113.9:8080/whip/live" in out
    assert "http://[2001:db8::9]:8080/whip/live" in out
    assert "http://203.0.113.9:8080/whep/live" in out


def test_udp_host_flag_binds_the_media_socket_and_overrides_the_variable(monkeypatch, capsys):
    FakeServer.instances.clear()
    monkeypatch.setitem(sys.modules, "sfu.app", types.SimpleNamespace(Server=FakeServer))
    monkeypatch.setenv("SFU_UDP_HOST", "127.0.0.2")  # the variable still works, the flag wins
    assert main(["serve", "--public-ip", "127.0.0.1", "--token-secret", SECRET]) == 0
    assert FakeServer.instances[-1].config.udp_host == "127.0.0.2"
    assert main(["serve", "--public-ip", "127.0.0.1", "--token-secret", SECRET, "--udp-host", "::1"]) == 0
    assert FakeServer.instances[-1].config.udp_host == "::1"
    capsys.readouterr()


def test_serve_generates_the_secret_file_the_token_command_reads(monkeypatch, tmp_path, capsys):
    FakeServer.instances.clear()
    monkeypatch.setitem(sys.modules, "sfu.app", types.SimpleNamespace(Server=FakeServer))
    assert main(["serve", "--public-ip", "127.0.0.1"]) == 0
    secret = FakeServer.instances[0].config.token_secret
    assert (tmp_path / ".local/state/sfu/token-secret").read_text().strip() == secret
    capsys.readouterr()
    assert main(["token", "--stream", "live", "--publish"]) == 0
    verify(secret, capsys.readouterr().out.strip(), "live", "publish")


def test_banner_has_obs_url_and_a_working_publish_token():
    config = Config(public_ips=["198.51.100.7"], token_secret=SECRET)
    server = types.SimpleNamespace(http_url="http://0.0.0.0:18080", udp_port=18443)
    text = banner(server, config)
    assert "Server:       http://198.51.100.7:18080/whip/live" in text
    assert "WHEP:         http://198.51.100.7:18080/whep/live" in text
    token = next(line.split(":", 1)[1].strip() for line in text.splitlines() if "Bearer Token" in line)
    claims = verify(SECRET, token, "any-stream", "publish")
    assert claims.exp - claims.iat == 12 * 3600
    with pytest.raises(Forbidden):
        verify(SECRET, token, "any-stream", "subscribe")


def test_banner_uses_public_url_behind_a_proxy():
    config = Config(public_url="https://sfu.example.com/", token_secret=SECRET)
    server = types.SimpleNamespace(http_url="http://127.0.0.1:8080", udp_port=8443)
    assert "https://sfu.example.com/whip/live" in banner(server, config)


def test_python_dash_m_sfu_is_sfu():
    out = subprocess.run([sys.executable, "-m", "sfu", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"sfu {__version__}"
    bad = subprocess.run([sys.executable, "-m", "sfu", "token"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage: sfu token" in bad.stderr
