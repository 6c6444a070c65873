"""What the flood, leak and soak benchmarks share: a free loopback port and the admin credential.

The scripts run as `python bench/NAME.py`, so this folder is on their import path.
"""

from __future__ import annotations

import socket


def admin_headers(secret: str) -> dict[str, str]:
    """The admin credential that /api/stats and /metrics need (a server from before it needs none)."""
    try:
        from sfu.keys import KeySet
    except ImportError:
        return {}
    return {"Authorization": f"Bearer {KeySet([('default', secret)]).mint('*', admin=True)}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
