"""The shape of a database connection as the engine uses it: where a statement runs.

A Protocol only (no driver here): the store runs its statements on one, a reader hands one
out as a batch's writer, and a transactional sink writes on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol


class ConnectionLost(Exception):
    """The executor's connection is gone: what ran on it in the open transaction is rolled
    back. (The readers raise it as ReaderDisconnected.)"""


class Row(Protocol):
    """A result row (asyncpg's Record): columns by name."""

    def __getitem__(self, key: str) -> Any: ...


class Executor(Protocol):
    """Runs one statement on a connection. ``long`` marks a bulk statement (a claim, a
    commit): the consumer's session gives it a longer time limit than a small query."""

    async def fetch(self, sql: str, *args: Any, long: bool = False) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any, long: bool = False) -> Row | None: ...

    async def fetchval(self, sql: str, *args: Any, long: bool = False) -> Any: ...

    async def execute(self, sql: str, *args: Any, long: bool = False) -> str: ...

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]], *,
                          long: bool = False) -> None:
        """One statement for each argument tuple, in order, pipelined (one round trip)."""
