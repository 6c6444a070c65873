"""Slow HTTP clients against `sfu serve` under systemd's default open-files limit (1,024).

    .venv/bin/python bench/slow_clients.py --clients 1100

A `sfu serve` child whose RLIMIT_NOFILE is set to `--nofile` (soft and hard, as systemd's default
1024:1024 where the hard limit was not raised; with a higher hard limit the server lifts its soft
limit itself). `--clients` connections each send the start of a request and never finish its
headers. Meanwhile `/healthz` is asked once a second: answered or not, and how fast. Then: how long
until the server closed every slow connection, its RSS and open files before / during / after, and
its drop counters. Bounded: `--hold` seconds of probing (at most 120), every request has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from benchlib import admin_headers

PROBE_TIMEOUT_S = 5.0


def proc_sample(pid: int) -> dict[str, float]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return {"rss_mib": round(rss / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


async def probe(url: str) -> float | None:
    """Seconds /healthz took to answer 200, or None."""
    start = time.monotonic()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as http:
            async with http.get(url) as r:
                if r.status == 200 and await r.text() == "ok":
                    return round(time.monotonic() - start, 4)
    except (aiohttp.ClientError, TimeoutError, OSError):
        pass
    return None


async def run(args: argparse.Namespace) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.clients + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.clients + 1024), hard))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nofile = args.nofile
    secret = secrets.token_urlsafe(32)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    cmd = [sys.executable, "-m", "sfu", "serve", "--http-host", "127.0.0.1", "--http-port", str(port),
           "--udp-port", "0", "--public-ip", "127.0.0.1", f"--token-secret={secret}",
           "--log-level", "warning", *args.server_arg]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limit)
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        url = f"http://127.0.0.1:{port}/healthz"
        idle = proc_sample(proc.pid)
        connect_failures = 0
        for _ in range(args.clients):
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), PROBE_TIMEOUT_S)
            except (OSError, TimeoutError):
                connect_failures += 1
                continue
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            writers.append(writer)
            readers.append(reader)
        opened_at = time.monotonic()
        during = proc_sample(proc.pid)
        probes = []
        closed_at: dict[int, float] = {}

        async def watch(i: int, reader: asyncio.StreamReader) -> None:
            try:
                await reader.read()
            except (ConnectionError, OSError):
                pass
            closed_at[i] = time.monotonic() - opened_at

        watchers = [asyncio.ensure_future(watch(i, r)) for i, r in enumerate(readers)]
        end = time.monotonic() + args.hold
        while time.monotonic() < end:
            probes.append(await probe(url))
            await asyncio.sleep(1.0)
        after = proc_sample(proc.pid)
        for w in watchers:
            w.cancel()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as http:
            try:
                async with http.get(f"http://127.0.0.1:{port}/metrics", headers=admin_headers(secret)) as r:
                    metrics = await r.text()
            except (aiohttp.ClientError, TimeoutError):
                metrics = ""
        dropped = {m[0]: int(float(m[1])) for m in re.findall(
            r'^sfu_http_connections_dropped_total\{reason="([a-z-]+)"\} ([0-9.]+)$', metrics, re.M)}
        answered = [p for p in probes if p is not None]
        return {
            "clients": args.clients, "nofile": nofile, "slow_connected": len(writers),
            "connect_failures": connect_failures,
            "healthz_answered": f"{len(answered)}/{len(probes)}",
            "healthz_max_s": max(answered) if answered else None,
            "slow_closed_by_server": len(closed_at),
            "slow_closed_within_s": round(max(closed_at.values()), 1) if closed_at else None,
            "idle": idle, "with_slow_clients": during, "after": after, "dropped": dropped,
        }
    finally:
        for w in writers:
            w.close()
        proc.terminate()
        try:
            _, err = await asyncio.to_thread(proc.communicate, timeout=20)
            if args.show_log:
                print(err.decode()[-2000:], file=sys.stderr)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1100)
    parser.add_argument("--nofile", type=int, default=1024, help="the server's open-files limit (soft = hard)")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds of /healthz probing")
    parser.add_argument("--server-arg", action="append", default=[])
    parser.add_argument("--show-log", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not 1 <= args.clients <= 10000 or not 0 < args.hold <= 120 or args.nofile < 64:
        parser.error("clients 1..10000, hold (0, 120] s, nofile >= 64")
    summary = asyncio.run(run(args))
    print(json.dumps(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
