"""`sfu bench` end to end: a spawned `sfu serve`, one publisher, three viewers, JSON out."""

from __future__ import annotations

import json
import subprocess
import sys



def test_bench_spawn_three_viewers_json() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sfu", "bench", "--spawn", "--viewers", "3", "--duration", "3",
         "--settle", "1", "--json", "--quiet",
         "--server-args", "--overload-queue-delay-ms 25 --no-gso"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    results = json.loads(done.stdout)
    argv = results["target"]["server_argv"]
    assert argv[-3:] == ["--overload-queue-delay-ms", "25", "--no-gso"]
    assert "--token-secret=(hidden)" in argv  # the spawned server's secret stays out of the report
    assert results["viewers"]["connected"] == 3
    assert results["viewers"]["failed"] == 0
    assert results["viewers"]["with_media"] == 3
    assert results["packets"]["out_packets"] > 0
    assert results["packets"]["in_pps"] > 0
    latency = results["latency_ms"]
    assert latency["samples"] > 0
    for key in ("p50", "p95", "p99"):
        assert latency[key] is not None and latency[key] >= 0
    tool = results["load_tool"]
    assert {k: tool[k] for k in ("decrypt_failures", "recv_errors", "send_errors", "twcc_overflow")} == dict.fromkeys(
        ("decrypt_failures", "recv_errors", "send_errors", "twcc_overflow"), 0)
    server = results["server"]
    assert server["spawned"] and server["cpu_s"] is not None and server["rss_mib_window_end"] > 0
