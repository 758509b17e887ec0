"""The dead letters: list, re-queue and purge them (``pgconnector dead-letters``).

A retried dead letter becomes a parked message of its publisher (connector/delivery/parking.py): the
active daemon delivers it, in dead-letter order, with fresh attempts, without a restart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from connector.store.queries import Queries
from connector.vocabulary import parse_table

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``2h``, ``7d``, ``1w`` (or combined: ``1h30m``) in seconds;
    ValueError otherwise."""
    s = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"{text!r} is not a duration (e.g. 90, 30s, 15m, 2h, 7d)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on; None matches everything."""

    publisher: str | None = None
    table: str | None = None  # schema.table or table
    older_than: float | None = None  # seconds
    newer_than: float | None = None  # seconds
    ids: tuple[int, ...] | None = None
    limit: int | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.publisher, self.table, self.older_than,
                                       self.newer_than, self.ids))

    def args(self) -> tuple[Any, ...]:
        schema = name = None
        if self.table is not None:
            t = parse_table(self.table)  # ValueError for a malformed name
            schema, name = (t.schema, t.name) if "." in self.table else (None, t.name)
        return (self.publisher, schema, name, self.older_than, self.newer_than,
                None if self.ids is None else list(self.ids), self.limit)


async def select(conn: asyncpg.Connection, schema: str, sel: Selection) -> dict[int, str]:
    """The selected dead letters' ids (oldest first) and publishers."""
    rows = await conn.fetch(Queries(schema).get("dead_letters_select"), *sel.args())
    return {r["id"]: r["publisher"] for r in rows}


async def show(conn: asyncpg.Connection, schema: str, ids: list[int]) -> list[asyncpg.Record]:
    """Those dead letters in full, payload included."""
    return list(await conn.fetch(Queries(schema).get("dead_letters_show"), ids))


async def retry(conn: asyncpg.Connection, schema: str, ids: list[int]) -> int:
    """Re-queue dead letters; how many were (one purged meanwhile is not)."""
    q = Queries(schema)
    moved = len(await conn.fetch(q.get("dead_letters_retry"), ids)) if ids else 0
    if moved:
        await conn.execute(q.get("wakeup"))
    return moved


async def purge(conn: asyncpg.Connection, schema: str, ids: list[int]) -> int:
    q = Queries(schema)
    return len(await conn.fetch(q.get("dead_letters_purge"), ids)) if ids else 0
