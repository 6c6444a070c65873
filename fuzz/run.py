#!/usr/bin/env python3
"""Run the fuzz targets (fuzz/fuzz_*.py) one after another and report their figures.

    python fuzz/run.py --seconds 2               # short run of every target (make fuzz-short)
    python fuzz/run.py --total 10000000          # long run: 10 M executions shared by the targets
    python fuzz/run.py --runs 50000 stun rtcp    # some targets, a fixed number of executions each

Each target starts from its seed corpus (fuzz/corpus/<target>/, read only) plus a scratch corpus
(new inputs go there: --work keeps it and libFuzzer's log, <target>.log; default a temporary
directory). Per target it prints the
executions, exec/s, libFuzzer's final coverage (`cov`: edges, `ft`: features) and the corpus size;
a crashing input is written to fuzz/crashes/<target>/ (replayed by tests/unit/test_fuzz_regressions.py)
and the exit status is 1. `--json FILE` writes the same figures as JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Share of a --total run per target: cheap parsers get more executions than whole-Router programs,
# so that each target gets time of the same order.
# (Roughly each target's exec/s measured on this project's 2-core machine, under load.)
WEIGHTS = {
    "keyframe": 30, "sdpfrag": 18, "srtp": 6, "stun": 6, "tokens": 4,
    "router": 4, "rtcp": 2, "twcc": 1, "sdp": 1,
}
MAX_LEN = {"sdp": 16384, "router": 4096}


def targets() -> list[str]:
    return sorted(f[len("fuzz_") : -3] for f in os.listdir(HERE) if f.startswith("fuzz_") and f.endswith(".py"))


def run_one(name: str, args: argparse.Namespace, runs: int | None, work: str) -> dict:
    corpus = os.path.join(HERE, "corpus", name)
    crashes = os.path.join(HERE, "crashes", name)
    os.makedirs(crashes, exist_ok=True)
    scratch = os.path.join(work, name)
    os.makedirs(scratch, exist_ok=True)
    cmd = [sys.executable, os.path.join(HERE, f"fuzz_{name}.py"), scratch, corpus,
           f"-artifact_prefix={crashes}/", "-print_final_stats=1", "-timeout=20", "-rss_limit_mb=3072",
           f"-max_len={MAX_LEN.get(name, 2048)}", f"-seed={args.seed}"]
    if runs is not None:
        cmd.append(f"-runs={runs}")
    if args.seconds is not None:
        cmd.append(f"-max_total_time={args.seconds}")
    started = time.monotonic()
    log = os.path.join(work, f"{name}.log")  # libFuzzer's progress lines, readable while it runs
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    with open(log, errors="replace") as f:
        out = f.read()
    stat = dict(re.findall(r"^stat::(\w+):\s+(\d+)", out, re.M))
    status = re.findall(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/", out, re.M)
    execs = int(stat.get("number_of_executed_units", status[-1][0] if status else 0))
    crashed = proc.returncode != 0
    result = {
        "target": name,
        "executions": execs,
        # libFuzzer's average counts whole seconds since its start (0 under a second): then ours
        "exec_per_s": int(stat.get("average_exec_per_sec", 0)) or round(execs / wall),
        "cov": int(status[-1][1]) if status else None,
        "ft": int(status[-1][2]) if status else None,
        "corpus": int(status[-1][3]) if status else None,
        "seconds": round(wall, 1),
        "crashed": crashed,
        "returncode": proc.returncode,
    }
    if crashed:
        result["artifact"] = re.findall(r"Test unit written to (\S+)", out)
        sys.stderr.write(out[-6000:])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", help=f"default: all of {', '.join(targets())}")
    ap.add_argument("--seconds", type=int, help="stop each target after this many seconds (with --total or --runs:"
                    " whichever comes first)")
    ap.add_argument("--runs", type=int, help="executions per target")
    ap.add_argument("--total", type=int, help="executions shared by the targets (WEIGHTS in this file)")
    ap.add_argument("--seed", type=int, default=1, help="libFuzzer seed (default 1: repeatable runs)")
    ap.add_argument("--work", help="keep the scratch corpora here (default: a temporary directory)")
    ap.add_argument("--jobs", type=int, default=1, help="targets run at once (default 1)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    names = args.targets or targets()
    unknown = set(names) - set(targets())
    if unknown:
        ap.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.seconds is None and args.runs is None and args.total is None:
        ap.error("give --seconds, --runs or --total")
    weight = sum(WEIGHTS.get(n, 10) for n in names)
    results = []
    with tempfile.TemporaryDirectory(prefix="sfu-fuzz-") as tmp:
        work = args.work or tmp
        print(f"{'target':10} {'executions':>12} {'exec/s':>8} {'cov':>6} {'ft':>7} {'corpus':>7} {'s':>7}  result",
              flush=True)

        def one(name: str) -> dict:
            runs = args.runs
            if args.total is not None:
                runs = max(1, args.total * WEIGHTS.get(name, 10) // weight)
            return run_one(name, args, runs, work)

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            done = pool.map(one, names)
            for r in done:
                results.append(r)
                name = r["target"]
                print(f"{name:10} {r['executions']:>12} {r['exec_per_s']:>8} {r['cov'] or '-':>6} {r['ft'] or '-':>7} "
                      f"{r['corpus'] or '-':>7} {r['seconds']:>7}  "
                      f"{'CRASH ' + str(r.get('artifact')) if r['crashed'] else 'ok'}", flush=True)
    total = sum(r["executions"] for r in results)
    secs = sum(r["seconds"] for r in results)
    print(f"{'total':10} {total:>12} {round(total / secs) if secs else 0:>8} {'':>6} {'':>7} {'':>7} {round(secs, 1):>7}  "
          f"{sum(r['crashed'] for r in results)} crashed", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "total_executions": total, "seconds": secs, "argv": sys.argv[1:]}, f, indent=1)
    return 1 if any(r["crashed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
