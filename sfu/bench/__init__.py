"""`sfu bench`: a WHIP/WHEP load tester (see docs/bench.md).

One or more synthetic publishers over WHIP (`sfu.testing.PacketPublisher`), N lightweight WHEP
viewers (`LoadViewer`, many per process, optionally in several processes), a ramp, a progress
line, and a closing table or JSON: viewers connected / failed, packets per second in and out,
loss, server-added latency percentiles, and the server's CPU and RSS when it runs on this host.
Only standard WHIP/WHEP (offer, 201 + answer, DELETE) and ICE/DTLS/SRTP: any server will do.
"""

from sfu.bench.runner import BenchOptions, run_bench

__all__ = ["BenchOptions", "run_bench"]
