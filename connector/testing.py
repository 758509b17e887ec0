"""In-memory parts for fast tests without PostgreSQL: a Reader, a Store and a recording Sink.

They keep the contracts of connector/readers/base.py, connector/store/base.py and
connector/publishers/base.py, so the pipeline, the delivery engine and parking run on them
exactly as on the real ones::

    reader = MemoryReader([[event(1), event(2)], [event(3)]])
    sink = RecordingSink("cache")
    harness = Harness([route("public.items", "cache")], {"cache": sink}, reader)
    await harness.run()                      # until the reader has nothing more
    assert sink.positions() == [1, 2, 3] and reader.acked == [0, 1]

A third-party sink can be checked the same way: put it in ``sinks`` in place of the
RecordingSink. Writes a batch makes on its writer (dead letters, parked messages) become
visible in the :class:`MemoryStore` only when the batch is acknowledged, as with the trigger
reader's claim transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from connector.delivery.engine import Delivery
from connector.delivery.parking import Parking
from connector.metrics import Metrics
from connector.pipeline import Pipeline, Stats
from connector.publishers.base import Publisher
from connector.readers.base import Batch, Reader, ReaderDisconnected
from connector.router import Router
from connector.store.base import Applied, Backlog, Executor, ParkedLot, ParkedMessage, Row, Store
from connector.vocabulary import (
    OPERATIONS,
    ChangeEvent,
    Config,
    DeadLetter,
    Message,
    Parked,
    PartialFailure,
    PermanentError,
    PublisherConfig,
    PublishError,
    RetryableError,
    RetryConfig,
    Route,
    parse_table,
    parse_template,
)

# Retries fast enough for a unit test, with the engine's shape (a few quick tries).
FAST = RetryConfig(max_attempts=3, initial_backoff=0.001, max_backoff=0.004)

__all__ = ["FAST", "Harness", "MemoryReader", "MemoryStore", "MemoryTransaction",
           "RecordingSink", "event", "route"]


def event(position: int, table: str = "public.items", op: str = "insert",
          new: Mapping[str, Any] | None = None, old: Mapping[str, Any] | None = None,
          key: tuple[str, ...] = ("id",)) -> ChangeEvent:
    """A change event as a reader makes it: ``new`` defaults to ``{"id": position}``."""
    t = parse_table(table)
    row = dict(new) if new is not None else ({"id": position} if op != "delete" else None)
    data = {"id": str(position), "op": op, "schema": t.schema, "table": t.name, "new": row,
            "old": dict(old) if old is not None else None}
    return ChangeEvent(position, t.schema, t.name, op, orjson.dumps(data), key, str(position))


def route(table: str, publisher: str, channel: str = "{table}",
          operations: Iterable[str] = OPERATIONS, index: int = 0) -> Route:
    """A plain route (no filter, whole rows), as the config would make it."""
    return Route(index, parse_table(table), frozenset(operations), publisher,
                 parse_template(channel))


class MemoryTransaction:
    """The writer of one batch: what is recorded on it applies when the batch is acked."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    # An Executor in name only: the memory store writes through ``pending``.
    async def fetch(self, sql: str, *args: Any, long: bool = False) -> list[Row]:
        raise NotImplementedError("the memory store runs no SQL")

    async def fetchrow(self, sql: str, *args: Any, long: bool = False) -> Row | None:
        raise NotImplementedError("the memory store runs no SQL")

    async def fetchval(self, sql: str, *args: Any, long: bool = False) -> Any:
        raise NotImplementedError("the memory store runs no SQL")

    async def execute(self, sql: str, *args: Any, long: bool = False) -> str:
        raise NotImplementedError("the memory store runs no SQL")

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]], *,
                          long: bool = False) -> None:
        raise NotImplementedError("the memory store runs no SQL")


class MemoryReader(Reader):
    """Hands out ``batches`` in order; a nacked batch comes again (same events, same order)
    before the next. ``finite``: ``read_batch`` returns None once all are acked; otherwise
    it then returns empty batches every ``idle`` seconds until interrupted. ``add`` appends
    a batch while running. ``acked`` / ``nacked`` record batch numbers in call order."""

    def __init__(self, batches: Iterable[Sequence[ChangeEvent]] = (), *, finite: bool = True,
                 idle: float = 0.01, atomic_writer: bool = True) -> None:
        # False: the writer "commits" when its block ends, before the ack (as the wal
        # reader's): Reader.atomic_writer
        self.atomic_writer = atomic_writer
        self.queue: list[tuple[int, list[ChangeEvent]]] = []
        self._numbers = itertools.count()
        for b in batches:
            self.add(b)
        self.finite = finite
        self.idle = idle
        self.lost = asyncio.Event()
        self.acked: list[int] = []
        self.nacked: list[int] = []
        self.opened = self.closed = 0
        self._out: tuple[int, list[ChangeEvent]] | None = None  # handed out, not settled
        self._tx: MemoryTransaction | None = None
        self._interrupted = False
        self._arrived = asyncio.Event()

    def add(self, events: Sequence[ChangeEvent]) -> None:
        self.queue.append((next(self._numbers), list(events)))
        with contextlib.suppress(AttributeError):  # not yet built in __init__
            self._arrived.set()

    async def open(self) -> None:
        self.opened += 1

    async def read_batch(self) -> Batch | None:
        assert self._out is None, "read_batch before the last batch was acked or nacked"
        while not self._interrupted:
            if self.lost.is_set():
                raise ReaderDisconnected("memory reader: session lost")
            if self.queue:
                self._out = self.queue.pop(0)
                self._tx = MemoryTransaction()
                return Batch(self._out[1], self._out[0])
            if self.finite:
                return None
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), self.idle)
            if not self.queue:
                return Batch([], None)
        return None

    @contextlib.asynccontextmanager
    async def writer(self, batch: Batch) -> AsyncIterator[Executor]:
        assert self._tx is not None and self._out is not None and batch.token == self._out[0]
        yield self._tx
        if not self.atomic_writer:
            pending, self._tx.pending = self._tx.pending, []
            for apply in pending:
                apply()

    async def ack(self, batch: Batch) -> None:
        assert self._out is not None and batch.token == self._out[0], "ack out of order"
        tx, self._tx, self._out = self._tx, None, None
        for apply in tx.pending if tx is not None else ():
            apply()
        self.acked.append(batch.token)

    async def nack(self, batch: Batch) -> None:
        if self._out is not None and batch.token == self._out[0]:
            self.queue.insert(0, self._out)
        self._out, self._tx = None, None
        self.nacked.append(cast(int, batch.token))

    def interrupt(self) -> None:
        self._interrupted = True
        self._arrived.set()

    async def close(self) -> None:
        if self._out is not None:  # given back
            self.queue.insert(0, self._out)
            self._out = self._tx = None
        self.closed += 1


@dataclass
class _Row:
    id: int
    message: Message
    attempts: int
    error: str | None
    first_failed: float = field(default_factory=time.monotonic)


class MemoryStore(Store):
    """Dead letters and parked messages in lists. ``lease_held`` False makes every lot hand
    out nothing (as when this instance lost the lease)."""

    def __init__(self) -> None:
        self.dead: list[DeadLetter] = []
        self.parked: dict[str, list[_Row]] = {}
        self.lease_held = True
        self.positions: dict[str, tuple[int, int]] = {}  # record_applied's, once acked
        self._ids = itertools.count(1)

    def parked_messages(self, sink: str) -> list[Message]:
        return [r.message for r in self.parked.get(sink, [])]

    async def record(self, ex: Executor, dead: Sequence[DeadLetter],
                     parked: Sequence[Parked]) -> None:
        def apply() -> None:
            self.dead.extend(dead)
            for p in parked:
                self.parked.setdefault(p.message.publisher, []).append(
                    _Row(next(self._ids), p.message, p.attempts, p.error))

        if isinstance(ex, MemoryTransaction):
            ex.pending.append(apply)
        else:
            apply()

    async def parked_among(self, ex: Executor, sinks: Sequence[str]) -> set[str]:
        return {s for s in sinks if self.parked.get(s)}

    async def has_parked(self, ex: Executor, sink: str) -> bool:
        return bool(self.parked.get(sink))

    async def discard_parked(self, ex: Executor, sink: str) -> int:
        return len(self.parked.pop(sink, []))

    async def backlog(self, ex: Executor) -> Backlog:
        return Backlog(None, None, {s: len(rows) for s, rows in self.parked.items() if rows})

    async def applied(self, ex: Executor, sinks: Sequence[str]) -> dict[str, tuple[int, int]]:
        return {s: self.positions[s] for s in sinks if s in self.positions}

    async def record_applied(self, ex: Executor, applied: Sequence[Applied]) -> None:
        def apply() -> None:
            self.positions.update({a.sink: a.order for a in applied})

        if isinstance(ex, MemoryTransaction):
            ex.pending.append(apply)
        else:
            apply()

    def lot(self, sink: str, lease: tuple[int, int]) -> ParkedLot:
        return _MemoryLot(self, sink)


class _MemoryLot(ParkedLot):
    def __init__(self, store: MemoryStore, sink: str) -> None:
        self.store, self.sink = store, sink

    @property
    def rows(self) -> list[_Row]:
        return self.store.parked.setdefault(self.sink, [])

    async def head(self, limit: int) -> list[ParkedMessage]:
        if not self.store.lease_held:
            return []
        now = time.monotonic()
        return [ParkedMessage(r.id, r.message, r.attempts, now - r.first_failed)
                for r in self.rows[:limit]]

    async def settle(self, delivered: Sequence[int], failed: Sequence[tuple[int, str]],
                     dead: Sequence[tuple[int, str, int]]) -> None:
        errors = dict(failed)
        gone = {i: (e, a) for i, e, a in dead}
        keep = []
        for r in self.rows:
            if r.id in gone:
                error, attempts = gone[r.id]
                self.store.dead.append(DeadLetter(r.message, error, attempts))
            elif r.id in errors:
                r.attempts += 1
                r.error = errors[r.id]
                keep.append(r)
            elif r.id not in delivered:
                keep.append(r)
        self.store.parked[self.sink] = keep

    async def expire(self, max_age: float) -> list[tuple[int, str]]:
        now = time.monotonic()
        old = [r for r in self.rows if now - r.first_failed > max_age]
        for r in old:
            error = f"gave up after {max_age:g} s: {r.error or 'not delivered'}"
            self.store.dead.append(DeadLetter(r.message, error, r.attempts))
        self.store.parked[self.sink] = [r for r in self.rows if r not in old]
        return [(r.message.route, r.error or "not delivered") for r in old]

    async def reset(self) -> None:
        pass

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        tx = MemoryTransaction()
        yield tx
        for apply in tx.pending:  # committed
            apply()


class RecordingSink(Publisher):
    """Records what it delivers, per channel, in order; fails as told:

    - ``down = True``: every publish raises RetryableError (an outage);
    - ``fail_next(n, error)``: the next ``n`` calls raise ``error``;
    - ``reject``: messages it matches are rejected for good (PermanentError, inside a
      PartialFailure when others of the batch got through).

    ``calls`` counts publish calls, ``peak`` the most that ran at once; ``delay`` makes each
    call take that long (seconds)."""

    type_name = "recording"

    def __init__(self, name: str = "recording", options: Mapping[str, Any] | None = None, *,
                 max_in_flight: int = 1, delay: float = 0.0) -> None:
        super().__init__(name, options or {})
        self.max_in_flight = max_in_flight
        self.delay = delay
        self.delivered: list[Message] = []
        self.down = False
        self.reject: Callable[[Message], bool] = lambda m: False
        self.calls = 0
        self.peak = 0
        self._running = 0
        self._failures: list[PublishError] = []
        self.closed = 0

    def fail_next(self, n: int, error: PublishError | None = None) -> None:
        self._failures += [error or RetryableError("scripted failure")] * n

    def positions(self, channel: str | None = None) -> list[int]:
        return [m.event.position for m in self.delivered
                if channel is None or m.channel == channel]

    async def publish(self, messages: Sequence[Message]) -> None:
        self.calls += 1
        self._running += 1
        self.peak = max(self.peak, self._running)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.down:
                raise RetryableError(f"{self.name} is down")
            if self._failures:
                raise self._failures.pop(0)
            failures: dict[int, PublishError] = {}
            for i, m in enumerate(messages):
                if self.reject(m):
                    failures[i] = PermanentError(f"{self.name} rejects {m.message_id}")
                else:
                    self.delivered.append(m)
            if failures:
                if len(failures) == len(messages):
                    raise next(iter(failures.values()))
                raise PartialFailure(failures)
        finally:
            self._running -= 1

    async def close(self) -> None:
        self.closed += 1


class Harness:
    """A pipeline over memory parts: ``routes`` to ``sinks``, batches from ``reader``."""

    def __init__(self, routes: Sequence[Route], sinks: Mapping[str, Publisher],
                 reader: MemoryReader, store: MemoryStore | None = None, *,
                 limits: Mapping[str, RetryConfig] | None = None,
                 inline: RetryConfig = FAST, batch_size: int = 100) -> None:
        self.reader = reader
        self.store = store or MemoryStore()
        self.sinks = dict(sinks)
        self.metrics = Metrics()
        self.stats = Stats()
        config = Config(publishers={n: PublisherConfig(n, s.type_name, {})
                                    for n, s in self.sinks.items()}, routes=tuple(routes))
        self.delivery = Delivery(self.sinks, limits, self.metrics, inline=inline)
        # Drains look at an empty lot every 10 ms here, not every 5 s.
        self.parking = Parking(self.delivery, self.store, batch_size, metrics=self.metrics,
                               idle_poll=0.01)
        self.session = MemoryTransaction()  # between batches: the store runs no SQL anyway
        self.pipeline = Pipeline(reader, Router(config), self.delivery, self.parking,
                                 self.store, self.session, lambda: (0, 0), self.metrics,
                                 self.stats)

    async def run(self) -> None:
        """Start the pipeline and run it until the reader returns None."""
        await self.pipeline.start()
        try:
            await self.pipeline.run()
        finally:
            await self.parking.stop()

    async def until(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until ``condition()`` holds; AssertionError after ``within`` seconds."""
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached within {within:g} s")
            await asyncio.sleep(0.005)
