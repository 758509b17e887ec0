"""Fixtures of the end-to-end tests (the shared ones live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.e2e.support import Daemon, daemon_factory


@pytest.fixture
async def daemons(database: str) -> AsyncIterator[Callable[..., Daemon]]:
    """Make ``Daemon``s; any still running at the end is killed (before the database goes)."""
    async with daemon_factory() as make:
        yield make
