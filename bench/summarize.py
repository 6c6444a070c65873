"""Print the tables of docs/performance.md from bench/results/*.json (written by perf_runs.sh)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def load(name: str) -> dict | None:
    path = RESULTS / name
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def fmt(x, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def main(profiles: list[str]) -> None:
    for p in profiles:
        print(f"\n## {p}")
        floors = {k: load(f"floor-{p}-{k}.json") for k in ("before", "after", "sendto")}
        for k, f in floors.items():
            if f:
                print(f"floor {k}: {f['us_per_packet']:.2f} µs/packet, {f['packets_per_cpu_s']:,.0f} packets per CPU-s"
                      f" (batch {f['batch']}, sys {100 * f['sys_s'] / f['cpu_s']:.0f} %)")
        print("\n| viewers | connected | out pps | server CPU % | out-packets / CPU-s | µs / out-packet |"
              " latency p50 / p95 / p99 ms | loss % | RSS end MiB | RSS / viewer KiB | tool CPU % |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for n in (1, 10, 100, 200, 300, 500):
            r = load(f"scale-{p}-{n}.json")
            if not r:
                continue
            s, pk, lat, v = r["server"], r["packets"], r["latency_ms"], r["viewers"]
            print(f"| {n} | {v['connected']} | {fmt(pk['out_pps'], 0)} | {fmt(s.get('cpu_pct'))} |"
                  f" {fmt(s.get('out_packets_per_cpu_s'))} | {fmt(s.get('us_per_out_packet'), 2)} |"
                  f" {fmt(lat['p50'], 2)} / {fmt(lat['p95'], 2)} / {fmt(lat['p99'], 2)} | {fmt(pk['loss_pct'], 3)} |"
                  f" {fmt(s.get('rss_mib_window_end'))} | {fmt(s.get('rss_kib_per_viewer'))} |"
                  f" {fmt(r['load_tool'].get('cpu_pct'))} |")
        pubs = load(f"publishers-{p}-10.json")
        if pubs:
            s = pubs["server"]
            print(f"\n10 publishers: RSS idle {s.get('rss_mib_idle')} MiB -> {s.get('rss_mib_publishers')} MiB: "
                  f"{s.get('rss_kib_per_publisher')} KiB per stream (after 1.5 s); end of window "
                  f"{s.get('rss_mib_window_end')} MiB")
        storm = load(f"storm-{p}-1000.json")
        if storm:
            v, j, s = storm["viewers"], storm["join"], storm["server"]
            print(f"\nstorm 1000 over {j['ramp_s']} s: connected {v['connected']}, failed {v['failed']} {v['errors']},"
                  f" with media {v['with_media']}, within {j['deadline_s']} s: {j['media_within_deadline']};"
                  f" connect {j['connect_s']}, first media {j['first_media_s']}; server CPU {s.get('cpu_pct')} %,"
                  f" RSS {s.get('rss_mib_window_end')} MiB, out pps {storm['packets']['out_pps']}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["gcm", "cm80"])
