"""Rounds of WHEP sessions that are created and then freed: does the server give the memory back?

    .venv/bin/python bench/leak_rounds.py --rounds 7 --sessions 2000            # `sfu serve` child
    .venv/bin/python bench/leak_rounds.py --rounds 3 --sessions 500 --in-process --trace

A publisher (`sfu.testing.PacketPublisher`, a light stream) makes a stream live; each round POSTs
`--sessions` WHEP offers (no ICE follows: the sessions stay unconnected), then frees them with
DELETE (`--free delete`, the default) or waits for them to expire (`--free expire`, ~21 s), waits
until `/api/stats` shows only the publisher again, and reads the server's RSS (VmRSS), open files
and, in process, live-object counts of the project's own classes (`gc`, after a collection) and a
tracemalloc diff against the end of the first round (`--trace`).

Against a `sfu serve` child the server's own flags apply (`--server-arg=--max-unconnected=0` to lift
the admission bound, which otherwise refuses most of a round from one address). Bounded: rounds,
sessions and every wait have limits; one line per round, a JSON summary at the end (`--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import secrets
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import aiohttp
from benchlib import admin_headers, free_port

ROOT = Path(__file__).resolve().parent.parent
SETTLE_TIMEOUT_S = 60.0  # sessions must be gone by then (expiry is ~21 s)
POST_CONCURRENCY = 32
ADMIN: dict[str, str] = {}  # the admin credential for /api/stats


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def own_class_counts() -> Counter[str]:
    """Live objects per class of the project (`sfu.*` classes and the fast path's types), after a
    full collection: deterministic, unlike RSS."""
    gc.collect()
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        module = getattr(type(obj), "__module__", "")
        if isinstance(module, str) and module.startswith(("sfu", "OpenSSL")):
            counts[f"{module}.{type(obj).__qualname__}"] += 1
    return counts


async def post_round(http: aiohttp.ClientSession, url: str, offer: str, n: int) -> list[str]:
    """`n` WHEP POSTs, `POST_CONCURRENCY` at a time; returns the Location URLs of the 201s."""
    locations: list[str] = []
    statuses: Counter[int] = Counter()
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            async with http.post(url, data=offer.encode(), headers={"Content-Type": "application/sdp"}) as r:
                await r.read()
                statuses[r.status] += 1
                if r.status == 201:
                    locations.append(str(r.url.join(aiohttp.client.URL(r.headers["Location"]))))

    await asyncio.gather(*(worker() for _ in range(POST_CONCURRENCY)))
    if set(statuses) != {201}:
        print(f"  statuses: {dict(statuses)}", file=sys.stderr)
    return locations


async def session_count(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(f"{base}/api/stats", headers=ADMIN) as r:
        return len((await r.json())["sessions"])


async def settle(http: aiohttp.ClientSession, base: str, want: int) -> float:
    """Wait until the server has `want` sessions; returns how long that took."""
    start = time.monotonic()
    while await session_count(http, base) > want:
        if time.monotonic() - start > SETTLE_TIMEOUT_S:
            raise RuntimeError(f"sessions not freed within {SETTLE_TIMEOUT_S} s")
        await asyncio.sleep(0.25)
    return time.monotonic() - start


async def run(args: argparse.Namespace) -> dict:
    from sfu.testing import PacketPublisher, PacketViewer

    server = proc = None
    if args.in_process:
        import sfu

        import dataclasses

        # in process the bounds on unconnected sessions are lifted: every POST makes a session
        config = dataclasses.replace(sfu.Config.for_tests(), max_unconnected_per_source=0, max_unconnected=0)
        server = sfu.Server(config)
        await server.start()
        base, secret, pid = server.http_url, config.token_secret, os.getpid()
    else:
        port, secret = free_port(), secrets.token_urlsafe(32)
        cmd = [sys.executable, "-m", "sfu", "serve", "--http-host", "127.0.0.1", "--http-port", str(port),
               "--udp-port", "0", "--public-ip", "127.0.0.1", "--token-secret", secret,
               "--log-level", "warning", *args.server_arg]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
        base, pid = f"http://127.0.0.1:{port}", proc.pid
        assert proc.stdout is not None
        for line in proc.stdout:  # the banner's first line means it listens
            if re.match(r"sfu .*HTTP on", line):
                break
        else:
            raise RuntimeError(f"`sfu serve` exited ({proc.wait()}) before its banner")
    from sfu import tokens

    ADMIN.update(admin_headers(secret))
    stream = "leak"
    rows: list[dict] = []
    publisher = PacketPublisher(f"{base}/whip/{stream}", tokens.mint(secret, stream, publish=True, subscribe=False),
                                bitrate=300_000, fps=15)
    try:
        async with aiohttp.ClientSession() as http:
            await publisher.start()
            offer = PacketViewer(f"{base}/whep/{stream}").build_offer()
            if args.trace and args.in_process:
                tracemalloc.start(12)
            baseline_counts = own_class_counts() if args.in_process else Counter()
            rows.append({"round": 0, "rss_mib": rss_kib(pid) / 1024, "fds": open_fds(pid)})
            print(f"round 0: RSS {rows[0]['rss_mib']:.1f} MiB, fds {rows[0]['fds']}", flush=True)
            first_snapshot = None
            for rnd in range(1, args.rounds + 1):
                t0 = time.monotonic()
                locations = await post_round(http, f"{base}/whep/{stream}", offer, args.sessions)
                peak = rss_kib(pid) / 1024
                if args.free == "delete":
                    for i in range(0, len(locations), POST_CONCURRENCY):
                        await asyncio.gather(*(http.delete(u) for u in locations[i:i + POST_CONCURRENCY]))
                freed_in = await settle(http, base, 1)
                await asyncio.sleep(args.pause)
                row = {"round": rnd, "created": len(locations), "peak_mib": round(peak, 1),
                       "rss_mib": round(rss_kib(pid) / 1024, 1), "fds": open_fds(pid),
                       "freed_in_s": round(freed_in, 1), "round_s": round(time.monotonic() - t0, 1)}
                if args.trim and args.in_process:  # what glibc gives back (sfu/io/memory.py does this)
                    import ctypes

                    started = time.perf_counter()
                    ctypes.CDLL("libc.so.6").malloc_trim(0)
                    row["trim_ms"] = round((time.perf_counter() - started) * 1000, 1)
                    row["rss_trimmed_mib"] = round(rss_kib(pid) / 1024, 1)
                if args.in_process:
                    counts = own_class_counts()
                    grown = {k: v - baseline_counts.get(k, 0) for k, v in counts.items()
                             if v - baseline_counts.get(k, 0) > 0}
                    row["live_objects_grown"] = dict(sorted(grown.items(), key=lambda kv: -kv[1])[:12])
                    if args.trace:
                        snap = tracemalloc.take_snapshot()
                        if first_snapshot is None:
                            first_snapshot = snap
                        else:
                            top = snap.compare_to(first_snapshot, "traceback")[:args.trace_top]
                            row["tracemalloc_top"] = [
                                {"size_kib": round(s.size_diff / 1024, 1), "count": s.count_diff,
                                 "where": [f"{f.filename.split('/site-packages/')[-1]}:{f.lineno}"
                                           for f in s.traceback[-6:]]}
                                for s in top]
                rows.append(row)
                print(f"round {rnd}: {json.dumps(row)}", flush=True)
    finally:
        await publisher.stop()
        if server is not None:
            await server.stop()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # a server busy freeing thousands of sessions
                proc.kill()
                proc.wait()
    return {"sessions_per_round": args.sessions, "free": args.free, "rows": rows,
            "growth_mib": round(rows[-1]["rss_mib"] - rows[1]["rss_mib"], 1) if len(rows) > 2 else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sessions", type=int, default=2000, help="WHEP POSTs per round")
    parser.add_argument("--free", choices=("delete", "expire"), default="delete")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between freeing and measuring")
    parser.add_argument("--in-process", action="store_true", help="run the server in this process (object counts)")
    parser.add_argument("--trim", action="store_true", help="in process: malloc_trim(0) after each round, RSS again")
    parser.add_argument("--trace", action="store_true", help="tracemalloc diff per round (in process)")
    parser.add_argument("--trace-top", type=int, default=8)
    parser.add_argument("--server-arg", action="append", default=[], help="extra `sfu serve` flag (repeatable)")
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()
    if args.rounds < 1 or args.rounds > 50 or args.sessions < 1 or args.sessions > 20000:
        parser.error("rounds 1..50, sessions 1..20000")
    summary = asyncio.run(run(args))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
