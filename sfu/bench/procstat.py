"""CPU time and memory of a local process, from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class ProcSample:
    at: float  # time.monotonic() of the reading
    cpu_s: float  # user + system CPU seconds since the process started
    user_s: float
    system_s: float
    rss_kib: int  # VmRSS
    hwm_kib: int  # VmHWM (peak RSS)
    threads: int


def read(pid: int, at: float) -> ProcSample | None:
    """One reading; None when the process is gone or not readable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
    except OSError:
        return None
    # fields after the command name (which may contain spaces): see proc(5)
    fields = stat[stat.rindex(b")") + 2 :].split()
    user = int(fields[11]) / CLOCK_TICKS  # utime is field 14 overall
    system = int(fields[12]) / CLOCK_TICKS
    cpu = user + system
    try:  # schedstat: nanoseconds on CPU, finer than clock ticks
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            cpu = int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    values: dict[bytes, int] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(b":")
        if key in (b"VmRSS", b"VmHWM", b"Threads"):
            values[key] = int(rest.split()[0])
    return ProcSample(at, cpu, user, system, values.get(b"VmRSS", 0), values.get(b"VmHWM", 0),
                      values.get(b"Threads", 0))
