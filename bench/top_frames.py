"""Top frames of a py-spy raw profile (`py-spy record -f raw`): self and inclusive shares."""

from __future__ import annotations

import sys
from collections import Counter


def main(path: str, top: int = 20) -> None:
    total = 0
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for line in open(path):
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    print(f"{total} samples")
    print("self:")
    for frame, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {frame[:140]}")
    print("inclusive (below the event loop):")
    for frame, n in incl.most_common(top + 12):
        if 100 * n / total < 99:
            print(f"  {100 * n / total:5.1f}%  {frame[:140]}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20)
