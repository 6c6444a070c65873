"""The bench run: target, publishers, viewer groups on one schedule, server sampling, results.

Schedule (CLOCK_MONOTONIC, shared by every process on the host): publishers connect and stream for
`PUBLISH_WARMUP_S`; viewers join evenly over `ramp` seconds from `ramp_start`; after `settle`
seconds the measurement window of `duration` seconds opens: packet rates, loss, the latency
histogram and the server's CPU are all taken over that window. RSS is read before the publishers,
after them and at the window's end.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sfu.bench import hist, procstat
from sfu.bench.group import run_group
from sfu.bench.loadpublisher import BenchPublisher
from sfu.bench.spawn import SpawnedServer, spawn_server

MAX_VIEWERS = 5000
MAX_PUBLISHERS = 50
MAX_DURATION_S = 600.0
MAX_RAMP_S = 300.0
MAX_PROCS = 16
PUBLISH_WARMUP_S = 1.5  # the server binds the publisher's SSRCs from its first packets
WORKER_STARTUP_S = 2.5  # a worker process imports aiohttp, OpenSSL, the fast path
STOP_GRACE_S = 60.0  # after the window: DELETEs and final records
SRTP_CHOICES = {
    "gcm": ("AEAD_AES_128_GCM",),
    "cm80": ("AES_CM_128_HMAC_SHA1_80",),
    "both": ("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"),
}


@dataclass
class BenchOptions:
    viewers: int = 10
    duration: float = 10.0
    ramp: float = 0.0
    settle: float = 2.0
    spawn: bool = False
    http_port: int = 0
    udp_port: int = 0
    whip: str | None = None
    whep: str | None = None
    token: str | None = None
    viewer_token: str | None = None
    server_pid: int | None = None
    server_args: list[str] = field(default_factory=list)  # more `sfu serve` arguments (--spawn)
    publishers: int = 1
    stream: str = "bench"
    video_codec: str | None = "VP8"
    bitrate: int = 2_500_000
    fps: float = 30.0
    keyframe_interval: float = 2.0
    pacing: float = 0.0  # publisher pacing factor (0: frames leave back to back)
    simulcast: list[str] = field(default_factory=list)
    audio: bool = True
    srtp: str = "both"
    decrypt_every: int = 1
    procs: int = 1
    nack: bool = True
    twcc: bool = True
    join_deadline: float = 15.0
    connect_timeout: float = 10.0
    local_addr: str = "127.0.0.1"

    def check(self) -> None:
        if not 0 <= self.viewers <= MAX_VIEWERS:
            raise ValueError(f"--viewers must be 0..{MAX_VIEWERS}")
        if not 1 <= self.publishers <= MAX_PUBLISHERS:
            raise ValueError(f"--publishers must be 1..{MAX_PUBLISHERS}")
        if not 0 < self.duration <= MAX_DURATION_S:
            raise ValueError(f"--duration must be in (0, {MAX_DURATION_S:.0f}] s")
        if not 0 <= self.ramp <= MAX_RAMP_S:
            raise ValueError(f"--ramp must be 0..{MAX_RAMP_S:.0f} s")
        if not 0 <= self.procs <= MAX_PROCS:
            raise ValueError(f"--procs must be 0..{MAX_PROCS}")
        if not 0 <= self.pacing <= 10:
            raise ValueError("--pacing must be 0 (off) .. 10")
        if self.srtp not in SRTP_CHOICES:
            raise ValueError(f"--srtp must be one of {', '.join(SRTP_CHOICES)}")
        if self.spawn == bool(self.whip or self.whep):
            raise ValueError("give either --spawn or both --whip and --whep")
        if self.server_args and not self.spawn:
            raise ValueError("--server-args goes with --spawn")
        if not self.spawn and not (self.whip and self.whep):
            raise ValueError("give both --whip and --whep")
        if not self.spawn and self.publishers > 1 and "{i}" not in (self.whip or "") + (self.whep or ""):
            raise ValueError("with --publishers > 1, put {i} in the --whip and --whep URLs")


def _pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, -(-len(ordered) * int(p) // 100) - 1))], 4)

    return {"p50": at(50), "p95": at(95), "max": round(ordered[-1], 4)}


class _Groups:
    """Viewer groups, in-process (`procs` 0) or as worker processes; collects their records."""

    def __init__(self) -> None:
        self.latest: dict[int, dict[str, Any]] = {}
        self.finals: dict[int, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.pids: list[int] = []
        self.tasks: list[asyncio.Future[Any]] = []

    def record(self, group: int, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "progress":
            self.latest[group] = record
        elif kind == "final":
            self.finals[group] = record
        elif kind == "error":
            self.errors.append(str(record.get("error")))

    async def start(self, specs: list[dict[str, Any]], procs: int) -> None:
        if procs == 0:
            for g, spec in enumerate(specs):
                self.tasks.append(asyncio.ensure_future(run_group(spec, lambda r, g=g: self.record(g, r))))
            return
        for g, spec in enumerate(specs):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sfu.bench.worker", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024,
            )
            assert process.stdin is not None
            process.stdin.write(json.dumps(spec).encode())
            process.stdin.close()
            self.pids.append(process.pid)
            self.tasks.append(asyncio.ensure_future(self._read(g, process)))

    async def _read(self, group: int, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            try:
                self.record(group, json.loads(line))
            except json.JSONDecodeError:
                self.errors.append(line.decode(errors="replace")[:300])
        code = await process.wait()
        if code and group not in self.finals:
            self.errors.append(f"viewer process {group} exited with {code}")

    async def wait(self, timeout: float) -> None:
        if self.tasks:
            done, pending = await asyncio.wait(self.tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    self.errors.append(repr(task.exception()))


async def run_bench(
    opts: BenchOptions, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run one bench; returns the results (what `--json` prints)."""
    opts.check()
    asyncio.get_running_loop()
    server: SpawnedServer | None = None
    publishers: list[BenchPublisher] = []
    groups = _Groups()
    samples: dict[str, procstat.ProcSample | None] = {}
    try:
        if opts.spawn:
            server = await spawn_server(opts.http_port, opts.udp_port, opts.server_args)
            from sfu import tokens

            def whip(i: int) -> str:
                return server.whip_url(_stream(opts, i))  # type: ignore[union-attr]

            def whep(i: int) -> str:
                return server.whep_url(_stream(opts, i))  # type: ignore[union-attr]

            pub_token = tokens.mint(server.token_secret, "*", publish=True, subscribe=False, ttl_s=3600)
            view_token = tokens.mint(server.token_secret, "*", publish=False, subscribe=True, ttl_s=3600)
            pid: int | None = server.pid
        else:
            def whip(i: int) -> str:
                return (opts.whip or "").replace("{i}", str(i))

            def whep(i: int) -> str:
                return (opts.whep or "").replace("{i}", str(i))

            pub_token = opts.token
            view_token = opts.viewer_token or opts.token
            pid = opts.server_pid

        def sample(name: str) -> None:
            samples[name] = procstat.read(pid, time.monotonic()) if pid else None

        sample("idle")
        for i in range(opts.publishers):
            publishers.append(BenchPublisher(
                whip(i), pub_token, video_codec=opts.video_codec, audio=opts.audio, bitrate=opts.bitrate,
                fps=opts.fps, keyframe_interval=opts.keyframe_interval, simulcast_rids=opts.simulcast,
                local_addr=opts.local_addr, connect_timeout=opts.connect_timeout, pacing=opts.pacing,
            ))
        await asyncio.gather(*(p.start() for p in publishers))
        await asyncio.sleep(PUBLISH_WARMUP_S)
        sample("publishers")

        now = time.monotonic()
        ramp_start = now + (WORKER_STARTUP_S if opts.procs else 0.3)
        window_start = ramp_start + opts.ramp + opts.settle
        window_end = window_start + opts.duration
        n_groups = max(1, opts.procs)
        specs = [{
            "token": view_token, "decrypt_every": opts.decrypt_every,
            "srtp_profiles": list(SRTP_CHOICES[opts.srtp]), "nack": opts.nack, "twcc": opts.twcc,
            "audio": opts.audio, "connect_timeout": opts.connect_timeout, "local_addr": opts.local_addr,
            "ramp_start": ramp_start, "window": [window_start, window_end], "viewers": [],
        } for _ in range(n_groups)]
        for j in range(opts.viewers):
            at = ramp_start + (opts.ramp * j / opts.viewers if opts.viewers else 0.0)
            specs[j % n_groups]["viewers"].append([j, whep(j % opts.publishers), at])
        await groups.start(specs, opts.procs)

        pub_packets: dict[str, int] = {}
        tool: dict[str, list[procstat.ProcSample | None]] = {"start": [], "end": []}
        started = time.monotonic()
        marks = [("window_start", window_start), ("window_end", window_end)]
        while marks:
            now = time.monotonic()
            name, at = marks[0]
            if now >= at:
                sample(name)
                pub_packets[name] = sum(p.stats["packets_sent"] for p in publishers)
                key = "start" if name == "window_start" else "end"
                tool[key] = [procstat.read(p, now) for p in groups.pids] + [procstat.read(_self_pid(), now)]
                marks.pop(0)
                continue
            if progress is not None:
                progress(_progress_line(now - started, opts, groups, pid, samples))
            await asyncio.sleep(min(1.0, max(0.0, at - time.monotonic())))
        await groups.wait(STOP_GRACE_S)
    finally:
        await asyncio.gather(*(p.stop() for p in publishers), return_exceptions=True)
        if server is not None:
            sample_end = procstat.read(server.pid, time.monotonic())
            samples.setdefault("window_end", sample_end)
            await server.stop()
    return _results(opts, server, pid, samples, groups, pub_packets, tool, publishers)


def _stream(opts: BenchOptions, i: int) -> str:
    return opts.stream if opts.publishers == 1 else f"{opts.stream}-{i}"


def _self_pid() -> int:
    import os

    return os.getpid()


_last_cpu: dict[str, float] = {}


def _progress_line(elapsed: float, opts: BenchOptions, groups: _Groups, pid: int | None,
                   samples: dict[str, Any]) -> str:
    latest = list(groups.latest.values())
    connected = sum(r["connected"] for r in latest)
    failed = sum(r["failed"] for r in latest)
    media = sum(r["with_media"] for r in latest)
    pps = sum(r["pps"] for r in latest)
    p99s = [r["p99_ms"] for r in latest if r.get("p99_ms") is not None]
    line = (f"[{elapsed:6.1f}s] viewers {connected}/{opts.viewers} ok, {failed} failed, {media} with media"
            f" | out {pps / 1000:7.1f}k pps | p99 {max(p99s):.2f} ms" if p99s else
            f"[{elapsed:6.1f}s] viewers {connected}/{opts.viewers} ok, {failed} failed, {media} with media"
            f" | out {pps / 1000:7.1f}k pps | p99 -")
    if pid:
        s = procstat.read(pid, time.monotonic())
        if s is not None:
            prev = _last_cpu.get("cpu"), _last_cpu.get("at")
            _last_cpu.update(cpu=s.cpu_s, at=s.at)
            if prev[0] is not None and prev[1] is not None and s.at > prev[1]:
                line += f" | server {100 * (s.cpu_s - prev[0]) / (s.at - prev[1]):5.1f}% CPU"
            line += f" {s.rss_kib / 1024:.0f} MiB"
    return line


def _results(opts: BenchOptions, server: SpawnedServer | None, pid: int | None,
             samples: dict[str, procstat.ProcSample | None], groups: _Groups, pub_packets: dict[str, int],
             tool: dict[str, list[procstat.ProcSample | None]], publishers: list[BenchPublisher]) -> dict[str, Any]:
    finals = list(groups.finals.values())
    window_hist: dict[int, int] = {}
    window: dict[str, int] = {}
    errors: dict[str, int] = {}
    profiles: dict[str, int] = {}
    attempts: list[dict[str, Any]] = []
    for f in finals:
        hist.merge(window_hist, f["hist"])
        for key, value in f["window"].items():
            window[key] = window.get(key, 0) + value
        for key, value in f["errors"].items():
            errors[key] = errors.get(key, 0) + value
        for key, value in f["profiles"].items():
            profiles[key] = profiles.get(key, 0) + value
        attempts.extend(f["attempts"])
    connected = sum(f["connected"] for f in finals)
    failed = sum(f["failed"] for f in finals)
    connect_s = [a["connected_at"] - a["requested_at"] for a in attempts if "connected_at" in a]
    answer_s = [a["answered_at"] - a["requested_at"] for a in attempts if "answered_at" in a]
    ice_s = [a["ice_at"] - a["answered_at"] for a in attempts if "ice_at" in a and "answered_at" in a]
    dtls_s = [a["connected_at"] - a["ice_at"] for a in attempts if "connected_at" in a and "ice_at" in a]
    first_media = [a["first_media_at"] for a in attempts if "first_media_at" in a]
    expected = window.get("expected", 0)
    received = window.get("received", 0)
    lost = max(0, expected - received)
    duration = opts.duration
    s0, s1 = samples.get("window_start"), samples.get("window_end")
    server_out: dict[str, Any] = {"pid": pid, "spawned": server is not None}
    if s0 is not None and s1 is not None:
        cpu = s1.cpu_s - s0.cpu_s
        wall = max(1e-6, s1.at - s0.at)
        server_out.update(
            cpu_s=round(cpu, 3), cpu_pct=round(100 * cpu / wall, 1),
            out_packets_per_cpu_s=round(window.get("packets", 0) / cpu) if cpu > 0 else None,
            us_per_out_packet=round(cpu / window["packets"] * 1e6, 3) if window.get("packets") else None,
        )
    for name in ("idle", "publishers", "window_end"):
        s = samples.get(name)
        if s is not None:
            server_out[f"rss_mib_{name}"] = round(s.rss_kib / 1024, 1)
    idle, pubs, end = samples.get("idle"), samples.get("publishers"), samples.get("window_end")
    if idle is not None and pubs is not None:
        server_out["rss_kib_per_publisher"] = round((pubs.rss_kib - idle.rss_kib) / opts.publishers, 1)
    if pubs is not None and end is not None and connected:
        server_out["rss_kib_per_viewer"] = round((end.rss_kib - pubs.rss_kib) / connected, 1)
    if end is not None:
        server_out["rss_mib_peak"] = round(end.hwm_kib / 1024, 1)
    tool_cpu = None
    if tool["start"] and tool["end"] and all(tool["start"]) and all(tool["end"]):
        tool_cpu = round(sum(b.cpu_s - a.cpu_s for a, b in zip(tool["start"], tool["end"], strict=False)), 3)  # type: ignore[union-attr]
    pub_stats = [p.stats for p in publishers]
    with_media = len(first_media)
    results = {
        "config": {k: v for k, v in asdict(opts).items() if k not in ("token", "viewer_token")},
        "target": {
            "spawned": server is not None,
            "http_url": server.http_url if server else None,
            "whip": opts.whip, "whep": opts.whep,
            "server_argv": [
                "--token-secret=(hidden)" if a.startswith("--token-secret=") else a for a in server.argv if a
            ] if server else None,
        },
        "viewers": {
            "requested": opts.viewers, "connected": connected, "failed": failed, "errors": errors,
            "with_media": with_media, "srtp_profiles": profiles,
        },
        "join": {
            "ramp_s": opts.ramp, "connect_s": _pct(connect_s), "first_media_s": _pct(first_media),
            # the connect time by phase: POST to answer, answer to ICE selected, ICE to SRTP keys
            "answer_s": _pct(answer_s), "ice_s": _pct(ice_s), "dtls_s": _pct(dtls_s),
            "deadline_s": opts.join_deadline,
            "media_within_deadline": sum(1 for t in first_media if t <= opts.join_deadline),
        },
        "publishers": {
            "count": len(publishers),
            "packets_sent": sum(s["packets_sent"] for s in pub_stats),
            "layers": [sorted(s["layers"]) for s in pub_stats][:1],
            "srtp_profile": pub_stats[0]["srtp_profile"] if pub_stats else None,
        },
        "packets": {
            "window_s": duration,
            "in_pps": round((pub_packets.get("window_end", 0) - pub_packets.get("window_start", 0)) / duration, 1),
            "out_pps": round(window.get("packets", 0) / duration, 1),
            "out_packets": window.get("packets", 0),
            "expected": expected, "received": received, "lost": lost,
            "loss_pct": round(100 * lost / expected, 4) if expected else None,
            "late_or_duplicate": window.get("late", 0),
            "nacks_sent": window.get("nacks_sent", 0),
            "twcc_feedback_sent": window.get("twcc_sent", 0),
        },
        "latency_ms": {**hist.summary(window_hist), "decrypt_every": opts.decrypt_every,
                       "replayed_excluded": sum(f.get("replayed", 0) for f in finals),
                       "clock": "kernel receive timestamp - publisher send time (CLOCK_MONOTONIC)"},
        "server": server_out,
        "load_tool": {
            "procs": opts.procs, "cpu_s": tool_cpu,
            "cpu_pct": round(100 * tool_cpu / duration, 1) if tool_cpu is not None else None,
            "decrypt_failures": sum(f.get("decrypt_failures", 0) for f in finals),
            "recv_errors": sum(f.get("recv_errors", 0) for f in finals),
            "send_errors": sum(f.get("send_errors", 0) for f in finals),
            "twcc_overflow": sum(f.get("twcc_overflow", 0) for f in finals),
            "errors": groups.errors[:10],
        },
        "histogram_us": {str(k): v for k, v in sorted(window_hist.items())},
    }
    return results


def format_table(r: dict[str, Any]) -> str:
    """The closing table (human-readable)."""
    v, j, p, lat, s, t = r["viewers"], r["join"], r["packets"], r["latency_ms"], r["server"], r["load_tool"]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f} ms"

    def num(x: Any, unit: str = "") -> str:
        if x is None:
            return "-"
        if isinstance(x, float):
            return f"{x:,.1f}{unit}"
        return f"{x:,}{unit}"

    rows = [
        ("viewers connected / failed", f"{v['connected']} / {v['failed']} of {v['requested']}"
         + (f"  ({', '.join(f'{k}: {n}' for k, n in v['errors'].items())})" if v["errors"] else "")),
        ("viewers with media", f"{v['with_media']}  (within {j['deadline_s']:.0f} s of ramp start: "
         f"{j['media_within_deadline']})"),
        ("SRTP profiles", ", ".join(f"{k}: {n}" for k, n in v["srtp_profiles"].items()) or "-"),
        ("connect time p50 / p95 / max", " / ".join(num(j["connect_s"][k], " s") for k in ("p50", "p95", "max"))),
        ("  p95 answer / ICE / DTLS", " / ".join(num(j[k]["p95"], " s") for k in ("answer_s", "ice_s", "dtls_s"))),
        ("first media p50 / p95 / max", " / ".join(num(j["first_media_s"][k], " s") for k in ("p50", "p95", "max"))
         + "  (from ramp start)"),
        ("packets/s in (publishers)", num(p["in_pps"])),
        ("packets/s out (viewers)", num(p["out_pps"])),
        ("loss", f"{num(p['loss_pct'], ' %')}  ({p['lost']} of {p['expected']}; NACKs sent {p['nacks_sent']})"),
        ("latency p50 / p95 / p99", " / ".join(ms(lat[k]) for k in ("p50", "p95", "p99"))
         + f"  (max {ms(lat['max'])}, {lat['samples']:,} samples)"),
        ("server CPU", f"{num(s.get('cpu_pct'), ' %')}  ({num(s.get('cpu_s'), ' s')} in {p['window_s']:.0f} s)"),
        ("server out-packets per CPU-s", f"{num(s.get('out_packets_per_cpu_s'))}  "
         f"({num(s.get('us_per_out_packet'))} µs per packet)"),
        ("server RSS idle / +publishers / end", " / ".join(
            num(s.get(f"rss_mib_{k}"), " MiB") for k in ("idle", "publishers", "window_end"))),
        ("server RSS per viewer / publisher", f"{num(s.get('rss_kib_per_viewer'), ' KiB')} / "
         f"{num(s.get('rss_kib_per_publisher'), ' KiB')}"),
        ("load tool CPU", f"{num(t.get('cpu_pct'), ' %')} over {t['procs'] or 1} process(es) + main"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"  {k:<{width}}  {val}" for k, val in rows]
    if t["errors"]:
        lines.append("  load tool errors: " + "; ".join(e.splitlines()[-1] if e else e for e in t["errors"][:3]))
    faults = {k: t.get(k, 0) for k in ("decrypt_failures", "recv_errors", "send_errors", "twcc_overflow")}
    if any(faults.values()):
        lines.append("  load tool faults: " + ", ".join(f"{k} {v}" for k, v in faults.items()))
    return "\n".join(lines)
