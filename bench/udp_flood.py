"""Floods during a live session (UDP at the media port, WHEP POSTs, slow HTTP): memory and the
existing viewer's frame rate.

    .venv/bin/python bench/udp_flood.py --flood 20 --ports 256 [--attack junk|valid-stun|whep|slow-http]

A `sfu serve` child on loopback; one `PacketPublisher` (`--bitrate`, `--fps`) and one
`PacketViewer`. Phases: `--before` seconds quiet, `--flood` seconds during which a separate process
attacks, then `--after` seconds quiet. `junk`: from `--ports` source ports, as fast as it can,
random datagrams (any first byte), STUN Binding requests with random USERNAMEs (RFC 8489 §14.3; the
server knows none of them) and junk whose first byte says STUN (0-3, RFC 7983). `valid-stun`: the
flooder POSTs its own WHEP session and sends Binding requests that pass its integrity check, from
`--ports` source ports. `whep`: WHEP POSTs, 32 at a time, from `--sources` loopback addresses.
`slow-http`: `--ports` connections that never finish their headers, re-opened when closed. Per second: the server's RSS, the
viewer's video frames received, the flood's datagrams sent. Summary: RSS before / peak / after,
the viewer's frame rate in each phase, the server's drop counters. Bounded: every phase has a
length (the flood at most 120 s), the flooding process is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import secrets
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

import aiohttp
from benchlib import admin_headers, free_port

MAX_FLOOD_S = 120.0
STUN_MAGIC = 0x2112A442


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stun_request(rng: random.Random) -> bytes:
    user = f"{rng.getrandbits(32):08x}:{rng.getrandbits(16):04x}".encode()
    pad = (-len(user)) % 4
    attr = struct.pack("!HH", 0x0006, len(user)) + user + b"\0" * pad
    return struct.pack("!HHI", 0x0001, len(attr), STUN_MAGIC) + rng.randbytes(12) + attr


def flood(target: tuple[str, int], ports: int, seconds: float, counter, valid: list[bytes]) -> None:
    """In its own process: send as fast as possible until `seconds` have passed. `valid`: Binding
    requests that pass the server's checks (the flooder's own WHEP session), sent instead of junk."""
    rng = random.Random(7)
    socks = []
    for _ in range(ports):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    payloads = [stun_request(rng) for _ in range(512)]
    payloads += [rng.randbytes(rng.randint(1, 1200)) for _ in range(512)]
    payloads += [bytes([rng.randint(0, 3)]) + rng.randbytes(rng.randint(19, 300)) for _ in range(512)]
    if valid:
        payloads = valid
    sent = 0
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        for _ in range(1000):
            try:
                socks[i % ports].sendto(payloads[i % len(payloads)], target)
                sent += 1
            except OSError:
                pass
            i += 1
        counter.value = sent


def whep_flood(base: str, seconds: float, counter, sources: int) -> None:
    """In its own process: WHEP POSTs (no ICE follows), 32 at a time, from `sources` loopback
    addresses (127.0.0.1, .2, ...), until `seconds` have passed; `counter` counts the answers."""
    from sfu.testing import PacketViewer

    offer = PacketViewer(f"{base}/whep/flood").build_offer().encode()

    async def main() -> None:
        end = time.monotonic() + seconds
        sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(f"127.0.0.{1 + i}", 0)))
                    for i in range(sources)]

        async def worker(http: aiohttp.ClientSession) -> None:
            while time.monotonic() < end:
                try:
                    async with http.post(f"{base}/whep/flood", data=offer,
                                         headers={"Content-Type": "application/sdp"}) as r:
                        await r.read()
                    counter.value += 1
                except aiohttp.ClientError:
                    pass

        await asyncio.gather(*(worker(sessions[i % sources]) for i in range(32)))
        for http in sessions:
            await http.close()

    asyncio.run(main())


def slow_http_flood(port: int, seconds: float, counter, clients: int) -> None:
    """In its own process: `clients` connections that never finish their headers, re-opened when
    the server closes them, until `seconds` have passed."""
    async def one(end: float) -> None:
        while time.monotonic() < end:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                counter.value += 1
                await asyncio.wait_for(reader.read(), max(0.1, end - time.monotonic()))
                writer.close()
            except (OSError, TimeoutError):
                await asyncio.sleep(0.1)

    async def main() -> None:
        end = time.monotonic() + seconds
        await asyncio.gather(*(one(end) for _ in range(clients)))

    asyncio.run(main())


async def attacker_checks(base: str) -> list[bytes]:
    """The attacker's own WHEP session: its answer gives the ICE credentials for valid checks."""
    from sfu.testing import PacketViewer
    from sfu.wire import stun

    attacker = PacketViewer(f"{base}/whep/flood")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/whep/flood", data=attacker.build_offer().encode(),
                             headers={"Content-Type": "application/sdp"}) as r:
            answer = await r.text()
    ufrag = re.search(r"a=ice-ufrag:(\S+)", answer).group(1)  # type: ignore[union-attr]
    pwd = re.search(r"a=ice-pwd:(\S+)", answer).group(1)  # type: ignore[union-attr]
    return [stun.binding_request(f"{ufrag}:{attacker._ice_ufrag}", pwd, use_candidate=False,
                                 priority=1, controlling=True, tie_breaker=1)[1] for _ in range(256)]


async def run(args: argparse.Namespace) -> dict:
    from sfu import tokens
    from sfu.testing import PacketPublisher, PacketViewer

    port, secret = free_port(), secrets.token_urlsafe(32)
    cmd = [sys.executable, "-m", "sfu", "serve", "--http-host", "127.0.0.1", "--http-port", str(port),
           "--udp-port", "0", "--public-ip", "127.0.0.1", f"--token-secret={secret}", "--log-level", "warning"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    flooder = None
    try:
        assert proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        udp_port = int(re.search(r"media on UDP port (\d+)", banner).group(1))  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        publisher = PacketPublisher(f"{base}/whip/flood", tokens.mint(secret, "flood", publish=True, subscribe=False),
                                    bitrate=args.bitrate, fps=args.fps)
        viewer = PacketViewer(f"{base}/whep/flood")
        await publisher.start()
        await viewer.start()
        valid: list[bytes] = []
        counter = multiprocessing.Value("q", 0)
        rows: list[dict] = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        phases = [("before", args.before), ("flood", args.flood), ("after", args.after)]
        last_frames = viewer.stats["video"]["frames"]
        for phase, length in phases:
            if phase == "flood" and args.attack == "valid-stun":
                valid = await attacker_checks(base)  # now: an unconnected session expires in 10 s
            if phase == "flood":
                if args.attack == "whep":
                    flooder = multiprocessing.Process(target=whep_flood, args=(base, length, counter, args.sources),
                                                      daemon=True)
                elif args.attack == "slow-http":
                    flooder = multiprocessing.Process(target=slow_http_flood, args=(port, length, counter, args.ports),
                                                      daemon=True)
                else:
                    flooder = multiprocessing.Process(target=flood, args=(("127.0.0.1", udp_port), args.ports,
                                                                          length, counter, valid), daemon=True)
                flooder.start()
            phase_end = loop.time() + length
            while loop.time() < phase_end:
                await asyncio.sleep(1.0)
                frames = viewer.stats["video"]["frames"]
                rows.append({"t_s": round(loop.time() - t0, 1), "phase": phase, "rss_mib": round(rss_mib(proc.pid), 1),
                             "frames": frames - last_frames, "flood_sent": counter.value})
                last_frames = frames
                print(json.dumps(rows[-1]), flush=True)
            if flooder is not None and phase == "flood":
                flooder.join(5)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/stats", headers=admin_headers(secret)) as r:
                stats = await r.json()
        await viewer.stop()
        await publisher.stop()
    finally:
        if flooder is not None and flooder.is_alive():
            flooder.kill()
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()

    def fps(phase: str) -> float:
        return round(statistics.mean(r["frames"] for r in rows if r["phase"] == phase), 1)

    flood_rows = [r for r in rows if r["phase"] == "flood"]
    return {
        "attack": args.attack, "ports": args.ports, "flood_s": args.flood, "flood_datagrams": counter.value,
        "flood_pps": round(counter.value / args.flood),
        "rss_before_mib": [r for r in rows if r["phase"] == "before"][-1]["rss_mib"],
        "rss_peak_mib": max(r["rss_mib"] for r in rows),
        "rss_end_of_flood_mib": flood_rows[-1]["rss_mib"],
        "rss_after_mib": rows[-1]["rss_mib"],
        "viewer_fps": {"before": fps("before"), "flood": fps("flood"), "after": fps("after")},
        "publisher_fps": args.fps,
        "server_drops": stats["router"]["drops"],
        "server_counters": {k: v for k, v in stats["counters"].items() if any(w in k for w in ("stun", "control", "unconnected", "rejected"))},
        "server_datagrams_in": stats["router"]["datagrams_in"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=float, default=10.0)
    parser.add_argument("--flood", type=float, default=20.0)
    parser.add_argument("--after", type=float, default=10.0)
    parser.add_argument("--ports", type=int, default=256, help="source ports of the flood")
    parser.add_argument("--bitrate", type=int, default=1_000_000)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--attack", choices=("junk", "valid-stun", "whep", "slow-http"), default="junk",
                        help="junk: random datagrams and STUN; valid-stun: Binding requests valid for the "
                        "flooder's own WHEP session; whep: WHEP POSTs; slow-http: --ports clients that never "
                        "finish their headers (default junk)")
    parser.add_argument("--sources", type=int, default=1, help="whep: loopback source addresses (127.0.0.N)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not 0 < args.flood <= MAX_FLOOD_S or not 1 <= args.ports <= 4096 or args.before < 1 or args.after < 1:
        parser.error(f"flood in (0, {MAX_FLOOD_S:.0f}] s, ports 1..4096, before/after >= 1 s")
    summary = asyncio.run(run(args))
    print(json.dumps(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
