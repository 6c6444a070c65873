"""`sfu bench --spawn`: run `sfu serve` as a child process on loopback and find its URLs."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import sys
import tempfile
from dataclasses import dataclass, field

BANNER = re.compile(r"HTTP on (\S+), media on UDP port (\d+)")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass
class SpawnedServer:
    process: asyncio.subprocess.Process
    http_url: str
    udp_port: int
    token_secret: str
    log_path: str
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def whip_url(self, stream: str) -> str:
        return f"{self.http_url}/whip/{stream}"

    def whep_url(self, stream: str) -> str:
        return f"{self.http_url}/whep/{stream}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> int | None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)  # stop at once (SIGTERM would drain, docs/admin.md)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode


async def spawn_server(http_port: int = 0, udp_port: int = 0, extra_args: list[str] | None = None) -> SpawnedServer:
    """Start `python -m sfu serve` on 127.0.0.1 (ephemeral ports by default); wait for its banner."""
    secret = secrets.token_urlsafe(32)
    argv = [
        sys.executable, "-m", "sfu", "serve", "--http-host", "127.0.0.1", "--http-port", str(http_port),
        "--udp-port", str(udp_port), "--public-ip", "127.0.0.1", f"--token-secret={secret}",  # = : a secret may start with "-"
        "--log-level", "warning",
        "--max-unconnected-per-source", "0",  # every load viewer joins from this one address
        *(extra_args or []),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_")}  # no user configuration
    log = tempfile.NamedTemporaryFile(prefix="sfu-bench-server-", suffix=".log", delete=False)
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=log, env=env,
    )
    log.close()
    assert process.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RuntimeError(f"`sfu serve` printed no banner within {START_TIMEOUT_S:.0f}s")
            line = await asyncio.wait_for(process.stdout.readline(), remaining)
            if not line:
                raise RuntimeError(f"`sfu serve` exited ({await process.wait()}) before its banner")
            match = BANNER.search(line.decode(errors="replace"))
            if match:
                break
    except BaseException as exc:
        server = SpawnedServer(process, "", 0, secret, log.name, argv)
        await server.stop()
        if isinstance(exc, (RuntimeError, asyncio.TimeoutError)):
            raise RuntimeError(f"{exc}; server log:\n{server.log_tail()}") from None
        raise
    # keep draining stdout so the child never blocks on a full pipe
    asyncio.ensure_future(_drain(process.stdout))
    return SpawnedServer(process, match.group(1), int(match.group(2)), secret, log.name, argv)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass
