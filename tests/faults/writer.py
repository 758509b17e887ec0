"""The writer that runs throughout a scenario: inserts and updates rows of ``public.items``,
reconnecting whenever the database goes away."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import asyncpg

TABLE_DDL = ("CREATE TABLE public.items (id bigint PRIMARY KEY, version int NOT NULL, "
             "payload text NOT NULL)")

_INSERT = ("INSERT INTO public.items (id, version, payload) "
           "SELECT g, 1, 'row ' || g FROM generate_series($1::bigint, $2::bigint) g")
_UPDATE = ("UPDATE public.items SET version = version + 1, payload = 'v' || (version + 1) "
           "WHERE id = ANY($1::bigint[])")

_CONNECTION_ERRORS = (OSError, ConnectionError, asyncio.TimeoutError,
                      asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                      asyncpg.exceptions.OperatorInterventionError,
                      asyncpg.exceptions.InternalClientError,
                      asyncpg.exceptions.CannotConnectNowError)


class Writer:
    """A background task making ``total`` changes (about ``rate`` per second), each transaction
    inserting ``inserts`` new rows and updating ``updates`` rows among the most recent ones, so
    a row is updated several times while the stream runs.

    Every change bumps the row's ``version`` (an insert is version 1), so the table alone tells
    which changes committed: row ``id`` at version ``v`` means changes ``(id, 1..v)``. A
    transaction cut by a fault has an unknown outcome; the writer reconnects and goes on with
    fresh ids (a lost insert leaves a gap, never a clash)."""

    def __init__(self, url: str, *, total: int, rate: float, inserts: int = 20, updates: int = 20,
                 hot_rows: int = 200, seed: int = 0) -> None:
        self.url = url
        self.total = total
        self.rate = rate
        self.inserts = inserts
        self.updates = updates
        self.hot_rows = hot_rows
        self.random = random.Random(seed)
        self.attempted = 0   # changes sent in transactions, committed or not
        self.committed = 0   # changes whose COMMIT was acknowledged
        self.in_doubt = 0    # transactions cut before their outcome was known
        self.reconnects = 0
        self.errors: list[str] = []
        self._next_id = 1
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._done = asyncio.Event()

    def start(self) -> Writer:
        self._task = asyncio.create_task(self._run(), name="faults-writer")
        return self

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self, timeout: float) -> None:
        """Until every change was attempted (raises what stopped the writer)."""
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
        started = time.monotonic()
        try:
            while self.attempted < self.total and not self._stop.is_set():
                if conn is None:
                    conn = await self._connect()
                    if conn is None:
                        return
                # Pace to the target rate (a fault that stalls the writer is caught up later).
                ahead = self.attempted / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), ahead)
                    continue
                try:
                    await self._transaction(conn)
                except _CONNECTION_ERRORS as exc:
                    self.in_doubt += 1
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    conn.terminate()
                    conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)
            self._done.set()

    async def _connect(self) -> asyncpg.Connection | None:
        first = True
        while not self._stop.is_set():
            try:
                conn = await asyncpg.connect(self.url, timeout=5)
                if not first or self.attempted:
                    self.reconnects += 1
                return conn
            except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                self.errors.append(f"connect: {type(exc).__name__}: {exc}")
            first = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.2)
        return None

    async def _transaction(self, conn: asyncpg.Connection) -> None:
        n_ins = min(self.inserts, self.total - self.attempted)
        first = self._next_id
        self._next_id += n_ins  # never reused, even when the outcome is unknown
        lo = max(1, first - self.hot_rows)
        n_upd = min(self.updates, self.total - self.attempted - n_ins, first - lo)
        ids = sorted(self.random.sample(range(lo, first), n_upd)) if n_upd > 0 else []
        self.attempted += n_ins + len(ids)
        async with conn.transaction():
            if n_ins:
                await conn.execute(_INSERT, first, first + n_ins - 1)
            if ids:
                await conn.execute(_UPDATE, ids)
        self.committed += n_ins + len(ids)


async def committed_changes(url: str) -> dict[int, int]:
    """The truth: each row's id → version (its changes are versions 1..version)."""
    conn = await asyncpg.connect(url)
    try:
        return {r["id"]: r["version"]
                for r in await conn.fetch("SELECT id, version FROM public.items")}
    finally:
        await conn.close()
