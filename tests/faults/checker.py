"""What arrived versus what committed: lost changes, duplicates, per-row order.

A change is ``(row id, version)``: the writer's insert is version 1 and each update bumps it, so
the table read back at the end says exactly which changes committed. What arrived is read from
the Redis stream the daemon XADDs to (``mode: stream``), which keeps every message, so a reader
that was disconnected (Redis down) misses nothing.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis import exceptions as rexc


@dataclass(frozen=True)
class Received:
    row: int
    version: int
    event_id: str


def parse_event(payload: bytes) -> Received:
    event = orjson.loads(payload)
    row = event["new"] if event["new"] is not None else event["old"]
    if row is None:  # a truncate: no row; the writer never truncates
        return Received(-1, -1, event["id"])
    return Received(int(row["id"]), int(row.get("version", -1)), str(event["id"]))


@dataclass
class Analysis:
    changes: int                  # changes that committed
    received: int                 # messages received, copies included
    lost: list[tuple[int, int]]   # committed, never received: (row, version)
    duplicated: int               # changes received more than once
    extra_copies: int             # messages beyond the first copy of each change
    changed_event_id: list[tuple[int, int]]  # a copy whose event id differs from the first's
    order_violations: list[tuple[int, int, int]]  # (row, version, a later version seen before)
    unexpected: list[tuple[int, int]]        # received but never committed
    updated_rows: int = 0         # rows with several versions: what the order check covers

    def summary(self) -> str:
        return (f"{self.changes} changes, {self.received} received, {len(self.lost)} lost, "
                f"{self.extra_copies} duplicate(s) of {self.duplicated} change(s), "
                f"{len(self.changed_event_id)} with a new event id, "
                f"{len(self.order_violations)} order violation(s), "
                f"{len(self.unexpected)} never committed")


def analyse(truth: Mapping[int, int], received: Iterable[Received]) -> Analysis:
    """``truth``: row id → committed version; ``received``: in arrival order."""
    first_event: dict[tuple[int, int], str] = {}
    copies: dict[tuple[int, int], int] = {}
    highest: dict[int, int] = {}
    changed_event_id: list[tuple[int, int]] = []
    order: list[tuple[int, int, int]] = []
    count = 0
    for r in received:
        count += 1
        key = (r.row, r.version)
        if key in first_event:
            copies[key] += 1
            if r.event_id != first_event[key]:
                changed_event_id.append(key)
            continue  # a repeat of a version already seen says nothing about order
        first_event[key] = r.event_id
        copies[key] = 1
        top = highest.get(r.row, 0)
        if r.version < top:
            order.append((r.row, r.version, top))
        else:
            highest[r.row] = r.version
    expected = {(row, v) for row, version in truth.items() for v in range(1, version + 1)}
    return Analysis(
        changes=len(expected),
        received=count,
        lost=sorted(expected - first_event.keys()),
        duplicated=sum(1 for c in copies.values() if c > 1),
        extra_copies=sum(c - 1 for c in copies.values()),
        changed_event_id=changed_event_id,
        order_violations=order,
        unexpected=sorted(first_event.keys() - expected),
        updated_rows=sum(1 for version in truth.values() if version > 1),
    )


class StreamReader:
    """Reads one Redis stream from its start for as long as it runs, riding out Redis going
    away (it resumes after the last entry it read)."""

    def __init__(self, url: str, key: str, field: bytes = b"event") -> None:
        self.url = url
        self.key = key
        self.field = field
        self.received: list[Received] = []
        self.added_ms: list[int] = []  # when Redis added each entry (its stream id), epoch ms
        self.reconnects = 0
        self._last = b"0-0"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> StreamReader:
        self._task = asyncio.create_task(self._run(), name="faults-stream-reader")
        return self

    @property
    def count(self) -> int:
        return len(self.received)

    def keys(self) -> set[tuple[int, int]]:
        """The distinct changes received so far."""
        return {(r.row, r.version) for r in self.received}

    def first_added_after(self, epoch_ms: int) -> int | None:
        """When the first entry added after ``epoch_ms`` was added, if one was read yet."""
        i = bisect.bisect_right(self.added_ms, epoch_ms)  # stream ids only grow
        return self.added_ms[i] if i < len(self.added_ms) else None

    async def _run(self) -> None:
        while True:
            client = aioredis.Redis.from_url(self.url, socket_timeout=5,
                                              socket_connect_timeout=2)
            try:
                while True:
                    await self._read(client, block=500)
            except (rexc.ConnectionError, rexc.TimeoutError, OSError):
                self.reconnects += 1
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _read(self, client: aioredis.Redis, block: int | None) -> int:
        reply: Any = await client.xread({self.key: self._last}, count=10_000, block=block)
        n = 0
        for _key, entries in reply or ():
            for entry_id, fields in entries:
                self.received.append(parse_event(fields[self.field]))
                self.added_ms.append(int(entry_id.split(b"-")[0]))
                self._last = entry_id
                n += 1
        return n

    async def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def stop(self) -> None:
        """Stop, after reading whatever the stream holds now (call once the daemon stopped)."""
        await self.cancel()
        client = aioredis.Redis.from_url(self.url, socket_timeout=10)
        try:
            while await self._read(client, block=None):
                pass
        finally:
            await client.aclose()


@dataclass
class ScenarioReport:
    """One line of the terminal summary."""

    name: str
    outcome: str = "running"
    analysis: Analysis | None = None
    figures: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        a = self.analysis
        if a is None and not self.figures:
            return f"{self.name}: {self.outcome}"
        counts = ("changes=?" if a is None else
                  f"changes={a.changes} received={a.received} lost={len(a.lost)} "
                  f"duplicates={a.extra_copies} order_violations={len(a.order_violations)}")
        extra = "".join(f" {k}={v}" for k, v in self.figures.items())
        return f"{self.name}: {self.outcome} {counts}{extra}"


REPORTS: list[ScenarioReport] = []
