"""`sfu bench`: argument parsing and output. The work is in `runner.run_bench`."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from typing import Any

from sfu.bench.runner import (
    MAX_DURATION_S, MAX_PROCS, MAX_PUBLISHERS, MAX_RAMP_S, MAX_VIEWERS, SRTP_CHOICES, BenchOptions,
    format_table, run_bench,
)

EPILOG = """examples:
  sfu bench --spawn --viewers 50 --duration 10
  sfu bench --spawn --viewers 1000 --ramp 10 --procs 2 --simulcast q,h,f --srtp gcm --json
  sfu bench --whip http://h:8080/whip/s --whep http://h:8080/whep/s --token T --server-pid 1234
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="load-test a WHIP/WHEP server",
        description="Publish synthetic media over WHIP, pull it with N WHEP viewers, and report "
        "throughput, loss, latency and the server's CPU and memory. See docs/bench.md.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = p.add_argument_group("target")
    target.add_argument("--spawn", action="store_true", help="start `sfu serve` on loopback and measure it")
    target.add_argument("--http-port", type=int, default=0, metavar="P", help="with --spawn (default ephemeral)")
    target.add_argument("--udp-port", type=int, default=0, metavar="P", help="with --spawn (default ephemeral)")
    target.add_argument("--whip", metavar="URL", help="WHIP endpoint ({i} = publisher index with --publishers)")
    target.add_argument("--whep", metavar="URL", help="WHEP endpoint ({i} as for --whip)")
    target.add_argument("--token", metavar="T", help="bearer token for WHIP (and WHEP unless --viewer-token)")
    target.add_argument("--viewer-token", metavar="T", help="bearer token for WHEP")
    target.add_argument("--server-pid", type=int, metavar="PID", help="a local server to read CPU/RSS of")
    target.add_argument("--server-args", metavar="ARGS", default="",
                        help='with --spawn: more `sfu serve` arguments, one string (e.g. "--no-gso")')

    load = p.add_argument_group("load")
    load.add_argument("--viewers", type=int, default=10, metavar="N", help=f"WHEP viewers (max {MAX_VIEWERS})")
    load.add_argument("--ramp", type=float, default=0.0, metavar="S",
                      help=f"join the viewers evenly over S seconds (max {MAX_RAMP_S:.0f})")
    load.add_argument("--settle", type=float, default=2.0, metavar="S", help="wait after the ramp (default 2)")
    load.add_argument("--duration", type=float, default=10.0, metavar="S",
                      help=f"measurement window (max {MAX_DURATION_S:.0f})")
    load.add_argument("--procs", type=int, default=1, metavar="N",
                      help=f"viewer processes (0 = in this process; max {MAX_PROCS})")
    load.add_argument("--srtp", choices=sorted(SRTP_CHOICES), default="both",
                      help="SRTP profiles the viewers offer (default both, GCM first)")
    load.add_argument("--decrypt-every", type=int, default=1, metavar="K",
                      help="verify+decrypt one packet in K per viewer for latency (default 1: all)")
    load.add_argument("--no-nack", action="store_true", help="viewers send no NACKs")
    load.add_argument("--no-twcc", action="store_true", help="viewers send no transport-cc feedback")
    load.add_argument("--join-deadline", type=float, default=15.0, metavar="S",
                      help="count viewers with media within S s of the ramp start (default 15)")
    load.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")

    media = p.add_argument_group("published media")
    media.add_argument("--publishers", type=int, default=1, metavar="N",
                       help=f"streams published (max {MAX_PUBLISHERS}); viewers spread over them")
    media.add_argument("--stream", default="bench", help="stream name (default bench; -i suffix if several)")
    media.add_argument("--codec", choices=["VP8", "H264", "none"], default="VP8", help="video codec")
    media.add_argument("--bitrate", type=int, default=2_500_000, metavar="BPS", help="top layer (default 2.5M)")
    media.add_argument("--fps", type=float, default=30.0)
    media.add_argument("--keyframe-interval", type=float, default=2.0, metavar="S")
    media.add_argument("--pacing", type=float, default=0.0, metavar="F",
                       help="pace video at F x its bitrate in 5 ms bursts, as a browser does (2.5); "
                       "default 0: each frame's packets back to back")
    media.add_argument("--simulcast", metavar="RIDS", default="",
                       help="comma-separated rids, e.g. q,h,f (low to high) or 0,1,2 (OBS)")
    media.add_argument("--no-audio", action="store_true")

    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    out.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run_cli)
    return p


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        viewers=args.viewers, duration=args.duration, ramp=args.ramp, settle=args.settle,
        spawn=args.spawn, http_port=args.http_port, udp_port=args.udp_port, whip=args.whip, whep=args.whep,
        token=args.token, viewer_token=args.viewer_token, server_pid=args.server_pid,
        server_args=shlex.split(args.server_args),
        publishers=args.publishers, stream=args.stream,
        video_codec=None if args.codec == "none" else args.codec, bitrate=args.bitrate, fps=args.fps,
        keyframe_interval=args.keyframe_interval,
        pacing=args.pacing,
        simulcast=[r for r in args.simulcast.split(",") if r], audio=not args.no_audio, srtp=args.srtp,
        decrypt_every=args.decrypt_every, procs=args.procs, nack=not args.no_nack, twcc=not args.no_twcc,
        join_deadline=args.join_deadline, connect_timeout=args.connect_timeout,
    )


def run_cli(args: argparse.Namespace) -> int:
    try:
        opts = options_from_args(args)
        opts.check()
    except ValueError as e:
        print(f"sfu bench: error: {e}", file=sys.stderr)
        return 2
    tty = sys.stderr.isatty()

    def progress(line: str) -> None:
        if args.quiet:
            return
        if tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    try:
        import uvloop  # type: ignore[import-not-found]

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        results = runner(run_bench(opts, progress))
    except (RuntimeError, OSError) as e:
        if tty and not args.quiet:
            sys.stderr.write("\n")
        print(f"sfu bench: error: {e}", file=sys.stderr)
        return 1
    if tty and not args.quiet:
        sys.stderr.write("\n")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
    ok = results["viewers"]["connected"] == opts.viewers and results["viewers"]["with_media"] == opts.viewers
    return 0 if ok else 1
