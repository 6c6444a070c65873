"""Fixtures for loopback integration tests: an in-process server on ephemeral ports."""

from __future__ import annotations

import pytest

import sfu


@pytest.fixture
async def server():
    async with sfu.Server(sfu.Config.for_tests()) as srv:
        yield srv
