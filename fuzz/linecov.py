#!/usr/bin/env python3
"""Line coverage of the Python parsers reached by a corpus: replays every input of the given
corpus directories through a target's `check` under the standard library's `trace` module and
prints, per parser file, the executable lines run / all executable lines.

    python fuzz/linecov.py sdp fuzz/corpus/sdp /tmp/fuzz-long-work/sdp

(libFuzzer's `cov`/`ft` in fuzz/run.py count instrumented edges and features of everything the
target imports, libraries included; this says how much of the project's own parser was run.)
The Cython fast path is compiled: its targets have no line figure here.
"""

from __future__ import annotations

import os
import sys
import trace

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FILES = {
    "stun": ["sfu/wire/stun.py"],
    "rtcp": ["sfu/wire/rtcp.py"],
    "sdp": ["sfu/wire/sdp.py", "sfu/wire/sdp_text.py", "sfu/wire/sdp_model.py", "sfu/core/negotiation.py"],
    "sdpfrag": ["sfu/wire/sdpfrag.py", "sfu/wire/sdp_text.py"],
    "tokens": ["sfu/tokens.py"],
    "twcc": ["sfu/core/twcc.py", "sfu/wire/rtcp.py"],
    "router": ["sfu/wire/rtcp.py"],
}


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    name, dirs = sys.argv[1], sys.argv[2:]
    files = [os.path.join(ROOT, f) for f in FILES.get(name, [])]
    if not files:
        print(f"{name}: compiled code only, no Python line coverage")
        return 0
    sys.path[:0] = [ROOT, HERE]
    inputs = []
    for d in dirs:
        for f in sorted(os.listdir(d)):
            with open(os.path.join(d, f), "rb") as fh:
                inputs.append(fh.read())

    def replay() -> None:
        import importlib

        check = importlib.import_module(f"fuzz_{name}").check
        for data in inputs:
            check(data)

    tracer = trace.Trace(count=1, trace=0, ignoredirs=[sys.prefix, sys.base_prefix])
    tracer.runfunc(replay)
    counts = tracer.results().counts
    print(f"{name}: {len(inputs)} inputs")
    for path in files:
        executable = set(trace._find_executable_linenos(path))  # noqa: SLF001 (the module's own helper)
        run = {line for (f, line), n in counts.items() if f == path and n} & executable
        print(f"  {os.path.relpath(path, ROOT):28} {len(run):5}/{len(executable):<5} lines  "
              f"{100 * len(run) / len(executable):5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
