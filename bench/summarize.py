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


def scale_row(n, r, floor_lo: float | None, floor_hi: float | None) -> str:
    s, pk, lat, v = r["server"], r["packets"], r["latency_ms"], r["viewers"]
    opc = s.get("out_packets_per_cpu_s")
    ratio = "-"
    if opc and floor_lo and floor_hi:
        ratio = f"{opc / floor_hi:.2f}–{opc / floor_lo:.2f}" if abs(floor_hi - floor_lo) > 1 else f"{opc / floor_lo:.2f}"
    return (f"| {n} | {v['connected']} | {fmt(pk['out_pps'], 0)} | {fmt(s.get('cpu_pct'))} |"
            f" {fmt(opc)} | {ratio} | {fmt(s.get('us_per_out_packet'), 2)} |"
            f" {fmt(lat['p50'], 2)} / {fmt(lat['p95'], 2)} / {fmt(lat['p99'], 2)} | {fmt(pk['loss_pct'], 3)} |"
            f" {fmt(s.get('rss_mib_window_end'))} | {fmt(s.get('rss_kib_per_viewer'))} |"
            f" {fmt(r['load_tool'].get('cpu_pct'))} |")


def storm_line(name: str, storm: dict | None) -> None:
    if not storm:
        return
    v, j, s = storm["viewers"], storm["join"], storm["server"]
    print(f"\n{name}: 1000 over {j['ramp_s']} s, top layer {storm['config']['bitrate']} bit/s: connected"
          f" {v['connected']}, failed {v['failed']} {v['errors']}, with media {v['with_media']}, within"
          f" {j['deadline_s']} s: {j['media_within_deadline']}; connect {j['connect_s']}, first media"
          f" {j['first_media_s']}; server CPU {s.get('cpu_pct')} %, tool CPU {storm['load_tool'].get('cpu_pct')} %,"
          f" RSS {s.get('rss_mib_window_end')} MiB, out pps {storm['packets']['out_pps']}; in the window after it:"
          f" loss {storm['packets']['loss_pct']} %, latency p50 / p99 {storm['latency_ms']['p50']} /"
          f" {storm['latency_ms']['p99']} ms")


HEADER = ("| viewers | connected | out pps | server CPU % | out-packets / CPU-s | / floor | µs / out-packet |"
          " latency p50 / p95 / p99 ms | loss % | RSS end MiB | RSS / viewer KiB | tool CPU % |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(profiles: list[str]) -> None:
    for p in profiles:
        print(f"\n## {p}")
        floors = {k: load(f"floor-{p}-{k}.json") for k in ("before", "after", "sendto", "gso8")}
        for k, f in floors.items():
            if f:
                print(f"floor {k}: {f['us_per_packet']:.2f} µs/packet, {f['packets_per_cpu_s']:,.0f} packets per CPU-s"
                      f" (batch {f['batch']}, gso {f.get('gso', 1)}, sys {100 * f['sys_s'] / f['cpu_s']:.0f} %)")
        per_dgram = [f["packets_per_cpu_s"] for k, f in floors.items() if f and k in ("before", "after")]
        lo, hi = (min(per_dgram), max(per_dgram)) if per_dgram else (None, None)
        for series, title in (("scale", "2.5 Mbit/s top layer"), ("scalelow", "300 kbit/s top layer")):
            rows = [(n, load(f"{series}-{p}-{n}.json")) for n in (1, 10, 100, 200, 500, 1000)]
            rows = [(n, r) for n, r in rows if r]
            if not rows:
                continue
            print(f"\n### {series}: {title} (floor = per-datagram sendmmsg, before/after)\n")
            print(HEADER)
            for n, r in rows:
                print(scale_row(n, r, lo, hi))
            ends = {n: r for n, r in rows}
            if 100 in ends and 1000 in ends:
                a, b = ends[100], ends[1000]
                dv = b["viewers"]["connected"] - a["viewers"]["connected"]
                if dv > 0:
                    slope = (b["server"]["rss_mib_window_end"] - a["server"]["rss_mib_window_end"]) * 1024 / dv
                    print(f"\nRSS per additional viewer, 100 -> 1000 viewers ({series}): {slope:.1f} KiB")
        pubs = load(f"publishers-{p}-10.json")
        if pubs:
            s = pubs["server"]
            print(f"\n10 publishers: RSS idle {s.get('rss_mib_idle')} MiB -> {s.get('rss_mib_publishers')} MiB: "
                  f"{s.get('rss_kib_per_publisher')} KiB per stream (after 1.5 s); end of window "
                  f"{s.get('rss_mib_window_end')} MiB")
        for storm_name in (f"storm-{p}-1000", f"stormlow-{p}-1000", f"stormnoguard-{p}-1000"):
            storm_line(storm_name, load(f"{storm_name}.json"))
        pinned = [(name, load(f"{name}.json")) for name in (
            f"pin-{p}-50", f"pin-{p}-50-paced", f"pin-{p}-100", f"pin-{p}-100-paced", f"pin-{p}-200",
            f"pin-{p}-200-paced", f"pinmulti-{p}-200")]
        pinned = [(name, r) for name, r in pinned if r]
        if pinned:
            print("\n### latency, server pinned to CPU 0, load tool to CPU 1\n")
            print("| run | publishers | viewers | paced | server CPU % | out pps | p50 / p95 / p99 / p99.9 ms | tool CPU % |")
            print("|---|---|---|---|---|---|---|---|")
            for name, r in pinned:
                c, lat, s = r["config"], r["latency_ms"], r["server"]
                print(f"| {name} | {c['publishers']} | {r['viewers']['connected']} | {c.get('pacing', 0)} |"
                      f" {fmt(s.get('cpu_pct'))} | {fmt(r['packets']['out_pps'], 0)} |"
                      f" {fmt(lat['p50'], 2)} / {fmt(lat['p95'], 2)} / {fmt(lat['p99'], 2)} / {fmt(lat.get('p99_9'), 2)} |"
                      f" {fmt(r['load_tool'].get('cpu_pct'))} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["gcm", "cm80"])
