"""Turn a soak's samples (bench/soak.py's JSON lines) into the Markdown table and curve for the docs.

    .venv/bin/python bench/soak_report.py bench/results/soak-1h.jsonl [--every 300]

One row per `--every` seconds (the sample nearest to each mark): RSS, open files, asyncio tasks,
HTTP connections, sessions, viewers connected, joins / vanished so far; then a text curve of RSS
over the whole run and the summary's verdicts (RSS growth after warm-up < 5 %, nothing left at
the end, vanished viewers freed within 30 s).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BARS = " ▁▂▃▄▅▆▇█"
GROWTH_LIMIT_PCT = 5.0
FREED_LIMIT_S = 30.0


def curve(values: list[float], width: int = 60) -> str:
    if not values:
        return ""
    step = max(1, len(values) // width)
    points = [max(values[i:i + step]) for i in range(0, len(values), step)]
    lo, hi = min(points), max(points)
    span = hi - lo or 1.0
    return "".join(BARS[1 + int((v - lo) / span * (len(BARS) - 2))] for v in points) + f"  ({lo:.1f}..{hi:.1f} MiB)"


def report(path: Path, every: float) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    samples = [r for r in rows if r.get("type") == "sample"]
    start = next((r for r in rows if r.get("type") == "start"), None)
    final = next((r for r in rows if r.get("type") == "final"), None)
    summary = next((r for r in rows if r.get("type") == "summary"), None)
    errors = sum(1 for r in rows if r.get("type") == "sample_error")
    lines = ["| t (min) | RSS (MiB) | open files | tasks | HTTP conns | sessions | viewers | joins | vanished |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def row(r: dict, label: str) -> str:
        conns = r.get("http_connections")
        return (f"| {label} | {r['rss_mib']:.1f} | {r['fds']} | {r['tasks']:.0f} | "
                f"{'-' if conns is None else f'{conns:.0f}'} | {r['sessions']} | {r['viewers_connected']} | "
                f"{r['joins']} | {r['vanished']} |")

    if start:
        lines.append(row(start, "start (idle)"))
    mark = 0.0
    for r in samples:
        if r["t_s"] >= mark:
            lines.append(row(r, f"{r['t_s'] / 60:.0f}"))
            mark = (r["t_s"] // every + 1) * every
    if final:
        lines.append(row(final, "end (idle)"))
    out = ["\n".join(lines), "", f"RSS: {curve([r['rss_mib'] for r in samples])}"]
    if summary:
        growth = summary["rss_growth_pct"]
        freed = summary.get("vanished_server_freed_max_s", summary["vanished_freed_max_s"])
        out += [
            "",
            f"- duration {summary['duration_s'] / 60:.0f} min, {summary['viewers']} viewer slots: "
            f"{summary['joins']} joins, {summary['leaves']} left with DELETE, {summary['vanished']} vanished, "
            f"{summary['failed']} failed joins",
            f"- RSS after warm-up ({summary['warmup_s'] / 60:.0f} min) {summary['rss_after_warmup_mib']:.1f} MiB, "
            f"at the end {summary['rss_end_mib']:.1f} MiB, max {summary['rss_max_mib']:.1f} MiB: growth "
            f"{growth:+.2f} % ({'<' if growth is not None and growth < GROWTH_LIMIT_PCT else 'NOT <'} {GROWTH_LIMIT_PCT:g} %)",
            f"- idle before / after: open files {summary['fds_start_idle']} / {summary['fds_end_idle']}, "
            f"asyncio tasks {summary['tasks_start_idle']:.0f} / {summary['tasks_end_idle']:.0f}, "
            f"sessions at the end {summary['sessions_end_idle']}",
            f"- vanished viewers freed by the server within {freed:.1f} s at most "
            f"({'within' if freed <= FREED_LIMIT_S else 'NOT within'} {FREED_LIMIT_S:g} s; "
            f"reasons {summary.get('vanished_close_reasons', {})}); never freed: {summary['vanished_never_freed']}",
        ]
    if errors:
        out.append(f"- {errors} samples failed (HTTP answer later than the sampler's timeout)")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--every", type=float, default=300.0, help="seconds between table rows")
    args = parser.parse_args()
    print(report(args.samples, args.every))
    return 0


if __name__ == "__main__":
    sys.exit(main())
