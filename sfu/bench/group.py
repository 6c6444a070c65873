"""A group of load viewers in one process, on a schedule given in CLOCK_MONOTONIC seconds.

`run_group(spec, emit)` starts each viewer at its time, emits a progress record every second,
snapshots the counters at the window's start and end (the latency histogram covers the window
only), then DELETEs every viewer and emits the final record. Records are plain dicts (JSON).
`python -m sfu.bench.worker` runs one group from a JSON spec on stdin, records on stdout: this is
how `--procs N` spreads viewers over N processes.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import aiohttp

from sfu.bench import hist
from sfu.bench.loadviewer import LoadViewer, Tally
from sfu.core.certificate import Certificate

PROGRESS_INTERVAL_S = 1.0
HTTP_CONNECTIONS = 64  # concurrent signalling requests per process
GC_THRESHOLD = (50_000, 20, 20)  # as `sfu serve`: viewers are long-lived objects, few cycles per packet
STOP_CONCURRENCY = 64
STOP_TIMEOUT_S = 10.0


def _counters(viewers: list[LoadViewer]) -> dict[str, int]:
    total: dict[str, int] = {}
    for v in viewers:
        for key, value in v.counters().items():
            total[key] = total.get(key, 0) + value
    return total


def _phases(record: dict[str, Any], viewer: LoadViewer, ramp_start: float) -> None:
    """When the answer came and when ICE was selected, from the ramp start (where reached)."""
    if viewer.answered_at is not None:
        record["answered_at"] = viewer.answered_at - ramp_start
    if viewer.ice_selected_at is not None:
        record["ice_at"] = viewer.ice_selected_at - ramp_start


async def run_group(spec: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    tally = Tally(spec["decrypt_every"])
    certificate = Certificate.generate(time.time(), lifetime_days=2)  # one per process is enough
    connector = aiohttp.TCPConnector(limit=HTTP_CONNECTIONS, force_close=False)
    # The server gets `connect_timeout` to accept the connection and to answer; time a request spends
    # waiting for one of this process's pooled connections is the tool's own queue (each browser has
    # its own connection), so it does not count against the viewer.
    limit = spec["connect_timeout"]
    http = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(
        total=None, sock_connect=limit, sock_read=limit))
    viewers: list[LoadViewer] = []
    attempts: list[dict[str, Any]] = []
    errors: dict[str, int] = {}
    ramp_start = spec["ramp_start"]

    async def one(index: int, url: str, start_at: float) -> None:
        await asyncio.sleep(max(0.0, start_at - loop.time()))
        record: dict[str, Any] = {"index": index, "requested_at": loop.time() - ramp_start}
        attempts.append(record)
        viewer = LoadViewer(
            url, spec.get("token"), tally=tally,
            srtp_profiles=tuple(spec["srtp_profiles"]), send_nack=spec["nack"], send_twcc=spec["twcc"],
            audio=spec["audio"], connect_timeout=spec["connect_timeout"], http=http,
            local_addr=spec["local_addr"], certificate=certificate,
        )
        record["viewer"] = viewer
        try:
            await viewer.start()
        except Exception as exc:  # any refusal or timeout is a failed viewer, counted by reason
            _phases(record, viewer, ramp_start)
            status = getattr(exc, "status", None)
            reason = f"http-{status}" if status else type(exc).__name__
            errors[reason] = errors.get(reason, 0) + 1
            record["error"] = f"{reason}: {exc}"[:300]
            return
        _phases(record, viewer, ramp_start)
        record["connected_at"] = loop.time() - ramp_start
        viewers.append(viewer)

    tasks = [
        asyncio.ensure_future(one(index, url, at)) for index, url, at in spec["viewers"]
    ]
    window_start, window_end = spec["window"]
    start_counters: dict[str, int] | None = None
    start_tally = (0, 0)
    window_hist: dict[int, int] = {}
    last_packets = 0
    last_at = loop.time()
    in_window = False
    next_progress = loop.time() + PROGRESS_INTERVAL_S
    while True:
        now = loop.time()
        if start_counters is None and now >= window_start:
            start_counters = _counters(viewers)
            start_tally = (tally.rx.packets, tally.rx.bytes)
            tally.rx.take_hist()
            in_window = True
        if in_window and now >= window_end:
            end_counters = _counters(viewers)
            end_tally = (tally.rx.packets, tally.rx.bytes)
            window_hist = hist.merge(window_hist, tally.rx.take_hist())
            in_window = False
            break
        if now >= next_progress:
            recent = tally.rx.take_hist()
            if in_window:
                hist.merge(window_hist, recent)
            p99 = hist.percentiles(recent, (99,))[99]
            emit({
                "type": "progress", "at": now, "connected": len(viewers),
                "failed": sum(errors.values()), "requested": len(attempts),
                "with_media": sum(1 for v in viewers if v.first_rtp_ns),
                "packets": tally.rx.packets, "pps": (tally.rx.packets - last_packets) / max(1e-3, now - last_at),
                "p99_ms": p99,
            })
            last_packets, last_at = tally.rx.packets, now
            next_progress += PROGRESS_INTERVAL_S
        boundary = window_start if start_counters is None else window_end
        await asyncio.sleep(max(0.0, min(next_progress, boundary) - loop.time()))
    # stop: cancel late joins, DELETE everybody with bounded concurrency
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    first_media = []
    for record in attempts:
        viewer = record.pop("viewer", None)
        if viewer is not None and viewer.first_rtp_ns:
            record["first_media_at"] = viewer.first_rtp_ns / 1e9 - ramp_start
            first_media.append(record["first_media_at"])
        if viewer is not None:
            record["srtp_profile"] = viewer.srtp_profile
    profiles: dict[str, int] = {}
    for v in viewers:
        profiles[str(v.srtp_profile)] = profiles.get(str(v.srtp_profile), 0) + 1
    window = {k: end_counters[k] - (start_counters or {}).get(k, 0) for k in end_counters}
    window["packets"] = end_tally[0] - start_tally[0]
    window["bytes"] = end_tally[1] - start_tally[1]
    final = {
        "type": "final",
        "requested": len(spec["viewers"]),
        "attempted": len(attempts),
        "connected": len(viewers),
        "failed": sum(v for k, v in errors.items() if k != "stop-failed"),
        "errors": errors,
        "attempts": attempts,
        "window": window,
        "hist": window_hist,
        "profiles": profiles,
        "decrypted": tally.rx.decrypted,
        "replayed": tally.rx.replayed,
        "decrypt_failures": tally.rx.decrypt_failures,
        "recv_errors": tally.rx.recv_errors,
        "send_errors": tally.send_errors,
        "twcc_overflow": tally.rx.twcc_overflow,
    }
    emit(final)  # before the DELETEs: a slow teardown must not lose the figures
    semaphore = asyncio.Semaphore(STOP_CONCURRENCY)

    async def stop(viewer: LoadViewer) -> None:
        async with semaphore:
            try:
                await asyncio.wait_for(viewer.stop(), STOP_TIMEOUT_S)
            except Exception:
                errors["stop-failed"] = errors.get("stop-failed", 0) + 1

    await asyncio.gather(*(stop(v) for v in viewers))
    tally.close()
    await http.close()
    return final


def main() -> int:
    spec = json.loads(sys.stdin.read())
    # A worker process only: full collections over hundreds of viewers' objects were pauses in the
    # receive path (an in-process group, `--procs 0`, leaves the embedding process's collector alone).
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass

    def emit(record: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()

    try:
        asyncio.run(run_group(spec, emit))
    except Exception:
        emit({"type": "error", "error": traceback.format_exc()[-2000:]})
        return 1
    return 0

