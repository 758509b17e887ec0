"""The consumer's one database session, shared by the reader and the lease.

One connection does everything - holds the session advisory lock that makes this instance the
only consumer (connector/lease.py), LISTENs for wake-ups, and reads each batch - so losing it
loses the lock and any open batch together, and nothing can be consumed twice concurrently.
Every use of it is bounded in time and pinged when quiet (liveness), and a standby takes over
from an active instance whose session went silent.

The session is an :class:`connector.store.base.Executor`: the store's statements run on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import asyncpg
import structlog

from connector import db
from connector.readers.base import ReaderDisconnected
from connector.store.base import Row
from connector.vocabulary import CaptureConfig, PostgresConfig

log = structlog.get_logger("pgconnector.source")
T = TypeVar("T")

WAKE_CHANNEL = "pgconnector_wakeup"
# A claim or commit is given liveness_timeout plus this many times the slowest recent one
# (forgotten slowly), and never more than OPERATION_TIMEOUT: claims take milliseconds, so a
# cut that lands during one is noticed about as fast as one between them, while a batch that
# is slow for real (large rows, a busy server) raises its own allowance; a false alarm costs
# one reconnect and widens the allowance past what it took.
SLOW_FACTOR = 10.0
OPERATION_TIMEOUT = 60.0

# OperatorInterventionError covers "terminating connection due to administrator command"
# (a restart or pg_terminate_backend), which arrives as a server error, not a socket error.
_CONNECTION_ERRORS = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                      asyncpg.exceptions.OperatorInterventionError,
                      asyncpg.exceptions.InternalClientError,  # protocol state broken by a kill
                      OSError,
                      asyncio.TimeoutError, ConnectionError)


class Transaction(Protocol):
    """asyncpg's transaction, as the session drives it."""

    async def start(self) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class ConsumerSession:
    """``open`` connects (raises connector.db.DatabaseError when it cannot); every statement
    then goes through :meth:`call` (bounded, one at a time); ``lost`` is set once the
    connection is gone or stops answering; ``close`` disconnects."""

    def __init__(self, pg: PostgresConfig, capture: CaptureConfig,
                 settings: Mapping[str, str] | None = None) -> None:
        self.pg = pg
        self.capture = capture
        self.settings = dict(settings or {})  # session settings of the connection
        self._conn: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self.interrupted = False
        self._io = asyncio.Lock()
        self._last_io = time.monotonic()  # when the last operation ended
        self._slowest = 0.0  # the slowest recent claim or commit, seconds (decaying)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.lost = asyncio.Event()  # set once the connection is lost or unresponsive

    async def open(self) -> None:
        self.lost = asyncio.Event()
        self._conn = await db.connect(self.pg, settings=self.settings)
        self._conn.add_termination_listener(self._on_terminated)
        await self._conn.add_listener(WAKE_CHANNEL, self._on_notify)
        self._last_io = time.monotonic()
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="pg-liveness")

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    def _on_terminated(self, *_: Any) -> None:
        self.lost.set()
        self._wake.set()

    def _declare_lost(self, reason: str) -> None:
        """The connection does not answer: drop it (the lock dies with its session, on the
        server's side as soon as it notices) and make everything waiting on it fail now."""
        if self.lost.is_set():
            return
        log.warning("database_unresponsive", reason=reason)
        self._on_terminated()
        if self._conn is not None:
            self._conn.terminate()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any,
                   long: bool = False) -> T:
        """Every use of the connection goes through here, one at a time (asyncpg allows no
        overlap). Each is bounded: a small query by ``liveness_timeout``, a claim, commit or
        other bulk statement (``long``) by that plus SLOW_FACTOR times the slowest recent one;
        past that the connection is taken for dead (a half-open network cut would otherwise
        hang it for minutes). Any connection failure comes out as ReaderDisconnected."""
        limit = self.capture.liveness_timeout
        if long:
            limit = min(OPERATION_TIMEOUT, limit + SLOW_FACTOR * self._slowest)
        async with self._io:
            started = time.monotonic()
            try:
                result = await asyncio.wait_for(fn(*args), limit)
                if long:
                    self._slowest = max(time.monotonic() - started, self._slowest * 0.95)
                return result
            except TimeoutError:
                if long:
                    self._slowest = max(self._slowest, limit)
                self._declare_lost(f"no answer within {limit:g} s")
                raise ReaderDisconnected(f"no answer from PostgreSQL within {limit:g} s"
                                         ) from None
            except _CONNECTION_ERRORS as exc:
                raise ReaderDisconnected(str(exc) or type(exc).__name__) from None
            finally:
                self._last_io = time.monotonic()

    # ------------------------------------------------------------------ Executor

    async def fetch(self, sql: str, *args: Any, long: bool = False) -> list[Row]:
        return list(await self.call(self.conn.fetch, sql, *args, long=long))

    async def fetchrow(self, sql: str, *args: Any, long: bool = False) -> Row | None:
        return await self.call(self.conn.fetchrow, sql, *args, long=long)

    async def fetchval(self, sql: str, *args: Any, long: bool = False) -> Any:
        return await self.call(self.conn.fetchval, sql, *args, long=long)

    async def execute(self, sql: str, *args: Any, long: bool = False) -> str:
        return str(await self.call(self.conn.execute, sql, *args, long=long))

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]], *,
                          long: bool = False) -> None:
        await self.call(self.conn.executemany, sql, args, long=long)

    # ------------------------------------------------------------------ transactions

    async def begin(self) -> Transaction:
        """A started transaction, to end with :meth:`commit` or :meth:`rollback_quietly`."""
        tx: Transaction = self.conn.transaction()
        await self.call(tx.start)
        return tx

    async def commit(self, tx: Transaction) -> None:
        await self.call(tx.commit, long=True)

    async def rollback_quietly(self, tx: Transaction) -> None:
        with contextlib.suppress(Exception):  # a lost connection has rolled back already
            await self.call(tx.rollback)

    # ------------------------------------------------------------------ liveness

    async def _heartbeat(self) -> None:
        """A half-open connection (a cut network that resets nothing) would hang the next
        query for minutes: ping it whenever it has been quiet for ``liveness_interval``,
        also while a batch is being published (inside its transaction), and give up after
        ``liveness_timeout``. Pinging also keeps the session's state_change fresh, which a
        standby reads to tell a live active instance from an unresponsive one."""
        interval = self.capture.liveness_interval
        while not self.lost.is_set():
            await asyncio.sleep(interval / 4)
            if time.monotonic() - self._last_io < interval or self._io.locked():
                continue  # recently used, or in use: each use is bounded on its own
            try:
                await self.fetchval("SELECT 1")
            except ReaderDisconnected as exc:
                self._declare_lost(str(exc))  # nothing to do if it is known already
                return

    @property
    def conn(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed() or self.lost.is_set():
            raise ReaderDisconnected("database connection lost")
        return self._conn

    @property
    def server_pid(self) -> int:
        return int(self.conn.get_server_pid())

    # ------------------------------------------------------------------ waiting

    async def sleep(self, seconds: float) -> bool:
        """Wait for a wake-up (NOTIFY, interrupt, connection lost) or the timeout; True when
        woken."""
        if self._wake.is_set():
            self._wake.clear()
            return True
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
            return True
        except TimeoutError:
            return False
        finally:
            self._wake.clear()

    def interrupt(self) -> None:
        """Make waits return promptly, for good (used to stop)."""
        self.interrupted = True
        self._wake.set()

    async def close(self) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._heartbeat_task
            self._heartbeat_task = None
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:
                conn.terminate()
