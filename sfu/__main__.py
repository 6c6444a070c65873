"""`python -m sfu` is the `sfu` command."""

from .cli import main

raise SystemExit(main())
