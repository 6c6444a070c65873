"""A real `sfu serve` process on loopback ephemeral ports, for tests that signal it (drain, logs).

    async with ServeProcess("--drain-timeout", "4") as serve:
        serve.whip_url("s"), serve.mint_token("s", publish=True), serve.proc.send_signal(SIGTERM)

The HTTP URL is read from the start-up banner's first line; stderr (the logs) is kept in `log_lines`
when `keep_log` is set, else discarded.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
from typing import Any

from ..keys import KeySet

START_TIMEOUT_S = 30.0


class ServeProcess:
    def __init__(self, *flags: str, keep_log: bool = False) -> None:
        self.secret = secrets.token_urlsafe(32)
        self.flags = flags
        self.keys = KeySet([("default", self.secret)])
        self.keep_log = keep_log
        self.log_lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.http_url = ""
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ServeProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sfu", "serve", "--http-host", "127.0.0.1", "--http-port", "0",
            "--udp-port", "0", "--public-ip", "127.0.0.1", f"--token-secret={self.secret}", *self.flags,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if self.keep_log else asyncio.subprocess.DEVNULL,
            env={**os.environ, "SFU_UDP_HOST": "127.0.0.1", "SFU_UDP_IPV6": "false"},
        )
        if self.keep_log:
            self._reader = asyncio.get_running_loop().create_task(self._read_log())
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), START_TIMEOUT_S)).decode()
        match = re.search(r"HTTP on (https?://\S+),", line)
        if match is None:  # (a secret starting with "-" once made argparse refuse it: hence `=`)
            raise RuntimeError(f"sfu serve did not start (exit {self.proc.returncode}): {line!r} {self.log_lines[-5:]}")
        self.http_url = match.group(1)
        return self

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.log_lines.append(raw.decode(errors="replace").rstrip("\n"))

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)

    def whip_url(self, stream: str) -> str:
        return f"{self.http_url}/whip/{stream}"

    def whep_url(self, stream: str) -> str:
        return f"{self.http_url}/whep/{stream}"

    def mint_token(self, stream: str, **caps: Any) -> str:
        return self.keys.mint(stream, **caps)

    async def exit_code(self, timeout: float) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)


__all__ = ["ServeProcess"]
