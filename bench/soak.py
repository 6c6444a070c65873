"""Soak: viewers join and leave continuously against one publisher; is anything left behind?

    nice -n 10 .venv/bin/python bench/soak.py --duration 3600 --out bench/results/soak.jsonl
    .venv/bin/python bench/soak_report.py bench/results/soak.jsonl            # the table for docs

A `sfu serve` child on loopback; one `PacketPublisher` (a light stream: `--bitrate` video at
`--fps`, plus Opus); `--viewers` slots, each a `LoadViewer` (sfu/bench/loadviewer.py) that joins,
stays a random `--min-stay`..`--max-stay` seconds and leaves: with DELETE, or, for `--vanish` of
them, without (the socket just closes, as a crashed browser's): those the server must free by ICE
consent expiry. Then the slot's next viewer joins.

Every `--interval` seconds one JSON line: the server's RSS (VmRSS), open files (/proc/PID/fd),
asyncio tasks (`sfu_asyncio_tasks` from /metrics), sessions (`/api/stats`), viewers connected on
our side, joins/leaves/vanished/failed so far, the longest time a vanished viewer's session
survived as polled (`vanished_freed_max_s`: late by up to `--interval` and the load tool's own lag) and
as the server logged it (`vanished_server_freed_max_s`: its INFO close line against the moment the
viewer vanished, both wall clock), and how many are still pending. The last line is a summary
(`"type": "summary"`). Bounded: the duration (at most 4 h), viewers (at most 200), every wait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import sys
import time
from pathlib import Path

import aiohttp
from benchlib import admin_headers, free_port

MAX_DURATION_S = 4 * 3600
MAX_VIEWERS = 200
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
CLOSED_LINE = re.compile(r"^(\S+ \S+) INFO sfu\.sessions: whep session (\S+) on \S+ closed: (.*)$")
HTTP_TIMEOUT_S = 30.0  # generous: on a loaded machine the load tool itself answers late


def proc_sample(pid: int) -> dict[str, float]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return {"rss_mib": round(rss / 1024, 2), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else None


async def run(args: argparse.Namespace) -> int:
    procs: list[asyncio.subprocess.Process] = []
    try:
        return await _run(args, procs)
    finally:
        for proc in procs:  # whatever happened, the server child does not outlive the run
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _run(args: argparse.Namespace, procs: list) -> int:
    from sfu import tokens
    from sfu.bench.loadviewer import LoadViewer, Tally
    from sfu.core.certificate import Certificate
    from sfu.testing import PacketPublisher

    try:  # stats and logs name a session by its public id (its URL's id is the capability)
        from sfu.core.sessions import public_id
    except ImportError:  # a server from before
        def public_id(session_id: str) -> str:
            return session_id

    port, secret = free_port(), secrets.token_urlsafe(32)
    cmd = [sys.executable, "-m", "sfu", "serve", "--http-host", "127.0.0.1", "--http-port", str(port),
           "--udp-port", "0", "--public-ip", "127.0.0.1", f"--token-secret={secret}", "--log-level", "info"]
    log_path = args.out.with_suffix(".server.log")
    log_file = open(log_path, "w")
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=log_file)
    procs.append(proc)
    base = f"http://127.0.0.1:{port}"
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
    if not line.startswith(b"sfu "):
        raise RuntimeError(f"no banner from `sfu serve`: {line!r}; see {log_path}")
    asyncio.ensure_future(proc.stdout.read())  # drain the rest of the banner

    admin = admin_headers(secret)
    out = open(args.out, "w")
    rng = random.Random(args.seed)
    stream = "soak"
    loop = asyncio.get_running_loop()
    started = loop.time()
    end = started + args.duration
    tally = Tally(decrypt_every=8)
    certificate = Certificate.generate(time.time(), lifetime_days=2)
    counts = {"joins": 0, "leaves": 0, "vanished": 0, "failed": 0}
    vanished: dict[str, float] = {}  # session (public id) -> when its viewer vanished
    vanished_wall: dict[str, float] = {}  # session id -> the same, wall clock (the server log's)
    server_freed: list[float] = []  # vanished viewer -> its session's close line in the server log
    close_reasons: dict[str, int] = {}
    log_reader = open(log_path)

    def read_server_log() -> None:
        """The server's own close times (INFO lines) for the vanished viewers' sessions: exact,
        where the polling below is late by up to a sample interval and the load tool's lag."""
        for text in log_reader.readlines():
            match = CLOSED_LINE.match(text)
            if match is None:
                continue
            session_id = match.group(2)
            reason = re.sub(r" \[stream=[^\]]*\]$", "", match.group(3).strip())  # the log's context suffix
            at = time.mktime(time.strptime(match.group(1)[:19], "%Y-%m-%d %H:%M:%S")) + int(match.group(1)[20:23]) / 1000
            if session_id in vanished_wall:
                server_freed.append(at - vanished_wall.pop(session_id))
                close_reasons[reason] = close_reasons.get(reason, 0) + 1
    freed_times: list[float] = []
    connected: set[LoadViewer] = set()
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)

    async with aiohttp.ClientSession(timeout=timeout) as http:
        async def sample(client: aiohttp.ClientSession) -> dict:
            row: dict = {"type": "sample", "t_s": round(loop.time() - started, 1)}
            async with client.get(f"{base}/api/stats", headers=admin) as r:
                stats = await r.json()
            async with client.get(f"{base}/metrics", headers=admin) as r:
                text = await r.text()
            row.update(proc_sample(proc.pid))
            live = set(stats["sessions"])
            read_server_log()
            now = loop.time()
            for session_id, at in list(vanished.items()):
                if session_id not in live:
                    freed_times.append(now - at)  # upper bound: freed before this sample
                    del vanished[session_id]
            row.update({
                "sessions": len(live), "viewers_connected": len(connected),
                "tasks": metric(text, "sfu_asyncio_tasks"), "http_connections": metric(text, "sfu_http_connections"),
                **counts, "vanished_pending": len(vanished),
                "vanished_pending_oldest_s": round(max((now - t for t in vanished.values()), default=0.0), 1),
                "vanished_freed_max_s": round(max(freed_times, default=0.0), 1),
                "vanished_server_freed_max_s": round(max(server_freed, default=0.0), 2),
                "vanished_server_freed_p50_s": round(sorted(server_freed)[len(server_freed) // 2], 2) if server_freed else 0.0,
                "vanished_server_freed_p95_s": round(sorted(server_freed)[int(len(server_freed) * 0.95)], 2) if server_freed else 0.0,
                "vanished_server_freed_over_30_s": sum(1 for t in server_freed if t > 30.0),
                "vanished_close_reasons": dict(close_reasons),
                "publisher_packets": publisher.stats["packets_sent"] if publisher else 0,
                "rx_packets": tally.rx.packets,
            })
            return row

        publisher = None
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as once:
            first = await sample(once)
        first["type"] = "start"
        out.write(json.dumps(first) + "\n")
        publisher = PacketPublisher(f"{base}/whip/{stream}",
                                    tokens.mint(secret, stream, publish=True, subscribe=False),
                                    bitrate=args.bitrate, fps=args.fps, http=http)
        await publisher.start()

        async def slot(index: int) -> None:
            await asyncio.sleep(rng.uniform(0, args.min_stay))  # spread the first joins
            while loop.time() < end - args.min_stay:
                viewer = LoadViewer(f"{base}/whep/{stream}", tally=tally, http=http, certificate=certificate,
                                    connect_timeout=10.0)
                try:
                    await viewer.start()
                except Exception:
                    counts["failed"] += 1
                    await asyncio.sleep(1.0)
                    continue
                counts["joins"] += 1
                connected.add(viewer)
                await asyncio.sleep(min(rng.uniform(args.min_stay, args.max_stay), max(0.0, end - loop.time())))
                connected.discard(viewer)
                if rng.random() < args.vanish:
                    session_id = public_id((viewer.resource_url or "").rsplit("/", 1)[-1])
                    vanished[session_id] = loop.time()
                    vanished_wall[session_id] = time.time()
                    counts["vanished"] += 1
                    await viewer._close()  # no DELETE, no close_notify: gone, as a crashed browser
                else:
                    counts["leaves"] += 1
                    await viewer.stop()

        tasks = [asyncio.ensure_future(slot(i)) for i in range(args.viewers)]
        rows = []
        try:
            while loop.time() < end:
                await asyncio.sleep(min(args.interval, max(0.0, end - loop.time())))
                if proc.returncode is not None:
                    raise RuntimeError(f"`sfu serve` exited ({proc.returncode}); see {log_path}")
                try:
                    row = await sample(http)
                except (aiohttp.ClientError, TimeoutError) as exc:  # a late answer is a figure, not the end
                    out.write(json.dumps({"type": "sample_error", "t_s": round(loop.time() - started, 1),
                                          "error": f"{type(exc).__name__}: {exc}"[:200]}) + "\n")
                    continue
                rows.append(row)
                out.write(json.dumps(row) + "\n")
                out.flush()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.wait_for(asyncio.gather(*(v.stop() for v in list(connected)), return_exceptions=True),
                                   STOP_TIMEOUT_S)
            connected.clear()
            await publisher.stop()
            # the last vanished viewers: wait (bounded) until the server has freed them, then sample
            deadline = loop.time() + 45.0
            while vanished and loop.time() < deadline:
                await asyncio.sleep(1.0)
                try:
                    await sample(http)
                except (aiohttp.ClientError, TimeoutError):
                    pass
            # idle: our pooled keep-alive connections closed (each is a server fd and task), then
            # one request on a connection of its own
            await http.close()
            await asyncio.sleep(2.0)
            async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as once:
                final = await sample(once)
            final["type"] = "final"
            out.write(json.dumps(final) + "\n")
            summary = summarize(rows + [final], args, first)
            out.write(json.dumps(summary) + "\n")
            out.close()
            print(json.dumps(summary))
            proc.terminate()
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            log_file.close()
            tally.close()
    return 0


def summarize(rows: list[dict], args: argparse.Namespace, start: dict) -> dict:
    """RSS growth after warm-up (the first `--warmup` seconds), what is left at the end."""
    after = [r for r in rows if r["t_s"] >= args.warmup and r.get("viewers_connected", 0) > 0]
    first, last = (after[0], after[-1]) if after else (rows[0], rows[-1])
    growth = (last["rss_mib"] - first["rss_mib"]) / first["rss_mib"] * 100 if first["rss_mib"] else None
    final = rows[-1]
    return {
        "type": "summary", "duration_s": args.duration, "viewers": args.viewers,
        "warmup_s": args.warmup, "rss_after_warmup_mib": first["rss_mib"], "rss_end_mib": last["rss_mib"],
        "rss_max_mib": max(r["rss_mib"] for r in after or rows),
        "rss_growth_pct": round(growth, 2) if growth is not None else None,
        "fds_start_idle": start["fds"], "fds_after_warmup": first["fds"], "fds_end_idle": final["fds"],
        "tasks_start_idle": start["tasks"], "tasks_after_warmup": first["tasks"], "tasks_end_idle": final["tasks"],
        "sessions_end_idle": final["sessions"],
        "joins": final["joins"], "leaves": final["leaves"], "vanished": final["vanished"], "failed": final["failed"],
        "vanished_freed_max_s": final["vanished_freed_max_s"],
        "vanished_server_freed_max_s": final["vanished_server_freed_max_s"],
        "vanished_server_freed_p50_s": final["vanished_server_freed_p50_s"],
        "vanished_server_freed_p95_s": final["vanished_server_freed_p95_s"],
        "vanished_server_freed_over_30_s": final["vanished_server_freed_over_30_s"],
        "vanished_close_reasons": final["vanished_close_reasons"], "vanished_never_freed": final["vanished_pending"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds (default 3600)")
    parser.add_argument("--viewers", type=int, default=100, help="viewer slots (default 100)")
    parser.add_argument("--min-stay", type=float, default=20.0, help="shortest stay, s")
    parser.add_argument("--max-stay", type=float, default=120.0, help="longest stay, s")
    parser.add_argument("--vanish", type=float, default=0.2, help="share of viewers that leave without DELETE")
    parser.add_argument("--bitrate", type=int, default=300_000, help="publisher video bit/s")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds before RSS growth is counted")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.jsonl"))
    args = parser.parse_args()
    if not 0 < args.duration <= MAX_DURATION_S or not 1 <= args.viewers <= MAX_VIEWERS:
        parser.error(f"duration in (0, {MAX_DURATION_S}] s, viewers 1..{MAX_VIEWERS}")
    if not 0 < args.min_stay <= args.max_stay or not 0 <= args.vanish <= 1 or args.interval <= 0:
        parser.error("0 < min-stay <= max-stay, 0 <= vanish <= 1, interval > 0")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
