"""Fixtures of the integration tests that run against both sources."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["trigger", "wal"])
def source(request: pytest.FixtureRequest, logical_database: str) -> tuple[str, str]:
    """(database URL, capture source): each test using it runs with both sources (the
    trigger source works on the wal_level=logical cluster too)."""
    return logical_database, str(request.param)
