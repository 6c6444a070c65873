"""Screenshots the page tests keep: tests/e2e/artifacts/<test>-<what>.png (git-ignored).

Each path is printed as it is written (run pytest with -s, or read the test's captured output), so a
report can list them.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).with_name("artifacts")


async def screenshot(page: Any, test: str, what: str) -> Path:
    """Save a full-page PNG of a Playwright page and print where."""
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{test}-{what}") + ".png"
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}", file=sys.stderr)
    return path
