"""Fixtures of the end-to-end tests (the shared ones live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import Daemon


@pytest.fixture
async def daemons(database: str) -> AsyncIterator[Callable[..., Daemon]]:
    """Make ``Daemon``s; any still running at the end is killed (before the database goes)."""
    made: list[Daemon] = []

    def make(config: Path, workdir: Path, **kwargs: Any) -> Daemon:
        d = Daemon(config, workdir, **kwargs)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None:
            await d.kill()
