"""`python -m sfu.bench.worker`: one viewer group per process (JSON spec on stdin, records on stdout)."""

import sys

from sfu.bench.group import main

if __name__ == "__main__":
    sys.exit(main())
