"""What both sources share: the consumer's one database session.

One connection does everything - holds the session advisory lock that makes this instance the
only consumer, LISTENs for wake-ups, and reads each batch - so losing it loses the lock and
any open batch together, and nothing can be consumed twice concurrently. Every use of it is
bounded in time and pinged when quiet (liveness), and a standby takes over from an active
instance whose session went silent.

Polling is adaptive: immediate while changes keep coming, backing off to ``poll_interval``
when idle; a wake-up (NOTIFY) cuts the wait short. A source with ``doze`` set has writers
that send a wake-up only while the consumer waits for one: the session holds the doze lock
(sql/doze.sql) from its first wait until changes come in a steady stream (a batch of
GATHER_FROM or more), so a busy or stopped consumer costs the writers no NOTIFY.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import asyncpg
import structlog

from connector import db
from connector.sources.base import Batch, Source, SourceDisconnected
from connector.sql import Queries
from connector.vocabulary import CaptureConfig, PostgresConfig

log = structlog.get_logger("pgconnector.source")
T = TypeVar("T")

WAKE_CHANNEL = "pgconnector_wakeup"
_FIRST_BACKOFF = 0.002  # first idle poll after activity, seconds
# While idle, next_batch returns an empty batch this often (and after a wake-up that found
# nothing to claim), so the consumer can look after other things on this connection.
HOUSEKEEPING = 5.0
# A claim or commit is given liveness_timeout plus this many times the slowest recent one
# (forgotten slowly), and never more than OPERATION_TIMEOUT: claims take milliseconds, so a
# cut that lands during one is noticed about as fast as one between them, while a batch that
# is slow for real (large rows, a busy server) raises its own allowance; a false alarm costs
# one reconnect and widens the allowance past what it took.
SLOW_FACTOR = 10.0
# A batch of GATHER_FROM or more changes that is not full means a steady stream: the next claim
# waits GATHER seconds, so a stream of thousands of changes a second is claimed and published
# in batches of dozens, not a few each (whose per-batch round trips and commits cost the
# daemon and its server session most of their CPU). A trickle is claimed as it comes.
GATHER_FROM = 8
GATHER = 0.005
OPERATION_TIMEOUT = 60.0

# OperatorInterventionError covers "terminating connection due to administrator command"
# (a restart or pg_terminate_backend), which arrives as a server error, not a socket error.
_CONNECTION_ERRORS = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                      asyncpg.exceptions.OperatorInterventionError,
                      asyncpg.exceptions.InternalClientError,  # protocol state broken by a kill
                      OSError,
                      asyncio.TimeoutError, ConnectionError)


class ConsumerSession(Source):
    """The session and the polling loop; a source adds how it reads and acknowledges."""

    #: session settings of the consumer's connection
    settings: ClassVar[Mapping[str, str]] = {}
    #: the writers' wake-up depends on the doze lock
    doze: ClassVar[bool] = False

    def __init__(self, pg: PostgresConfig, capture: CaptureConfig) -> None:
        self.pg = pg
        self.capture = capture
        self.q = Queries(pg.schema)
        self._conn: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._dozing = False  # this session holds the doze lock
        self._interrupted = False
        self._delay = 0.0
        self._full = False
        self._busy = False  # batches come, neither full nor small: gather before claiming
        self._keys: dict[tuple[str, str], tuple[str, ...]] = {}
        self._lock_key: int | None = None
        self._returned = time.monotonic()  # when next_batch last returned
        self._io = asyncio.Lock()
        self._last_io = time.monotonic()  # when the last operation ended
        self._slowest = 0.0  # the slowest recent claim or commit, seconds (decaying)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.lost = asyncio.Event()  # set once the connection is lost or unresponsive

    async def open(self) -> None:
        self.lost = asyncio.Event()
        self._keys.clear()
        self._dozing = False  # the lock went with the old session
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

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any,
                    long: bool = False) -> T:
        """Every use of the connection goes through here, one at a time (asyncpg allows no
        overlap). Each is bounded: a small query by ``liveness_timeout``, a claim, commit or
        other bulk statement (``long``) by that plus SLOW_FACTOR times the slowest recent one;
        past that the connection is taken for dead (a half-open network cut would otherwise
        hang it for minutes). Any connection failure comes out as SourceDisconnected."""
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
                raise SourceDisconnected(f"no answer from PostgreSQL within {limit:g} s"
                                         ) from None
            except _CONNECTION_ERRORS as exc:
                raise SourceDisconnected(str(exc) or type(exc).__name__) from None
            finally:
                self._last_io = time.monotonic()

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
                await self._call(self.conn.fetchval, "SELECT 1")
            except SourceDisconnected as exc:
                self._declare_lost(str(exc))  # nothing to do if it is known already
                return

    async def _rollback_quietly(self, tx: Any) -> None:
        with contextlib.suppress(Exception):  # a lost connection has rolled back already
            await self._call(tx.rollback)

    @property
    def conn(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed() or self.lost.is_set():
            raise SourceDisconnected("database connection lost")
        return self._conn

    @property
    def lock(self) -> tuple[int, int]:
        """(server pid of the session holding the consumer lock, the lock's key): a second
        connection checks them before it publishes (sql/parked_head.sql)."""
        assert self._lock_key is not None, "acquire() first"
        return self.conn.get_server_pid(), self._lock_key

    async def parked_among(self, publishers: Sequence[str]) -> set[str]:
        """Which of ``publishers`` have parked messages (not in a claim transaction)."""
        rows = await self._call(self.conn.fetch, self.q.get("parked_among"), list(publishers))
        return {r["name"] for r in rows}

    async def has_parked(self, publisher: str) -> bool:
        """Inside the open claim transaction (which has parked nothing yet), so the answer
        holds until this batch parks something."""
        return bool(await self._call(self.conn.fetchval, self.q.get("parked_exists"),
                                     publisher))

    async def acquire(self, on_standby: Callable[[Any], None] | None = None) -> None:
        key = await self._call(self.conn.fetchval, self.q.get("consumer_key"), self.pg.schema)
        self._lock_key = key
        announced = False
        while not self._interrupted:
            if await self._call(self.conn.fetchval, self.q.get("try_consumer_lock"), key):
                return
            holder = await self._call(self.conn.fetchrow, self.q.get("active_consumer"), key)
            if holder is not None and await self._unresponsive(holder):
                continue  # try again at once
            if not announced:
                if on_standby is not None:
                    on_standby(dict(holder) if holder else None)
                announced = True
            await self._sleep(self.capture.standby_retry)

    async def _unresponsive(self, holder: asyncpg.Record) -> bool:
        """The active instance pings its session at least every liveness_interval and gives
        up on it after liveness_timeout; a session idle far longer than both belongs to an
        instance that lost its connection without the server noticing (a half-open network
        cut). End it, so its lock is freed; it has stopped publishing already. True when it
        was ended."""
        idle = holder["idle_seconds"]
        if idle is None or idle < self.capture.takeover_after:
            return False
        ended = await self._call(self.conn.fetchval,
                                 "SELECT pg_catalog.pg_terminate_backend($1)", holder["pid"])
        log.warning("took_over_unresponsive_consumer", pid=holder["pid"],
                    active=holder["application_name"], idle_seconds=round(idle, 1),
                    ended=bool(ended))
        await asyncio.sleep(0.1)  # the backend exits asynchronously
        return bool(ended)

    async def _sleep(self, seconds: float) -> bool:
        """Wait for a wake-up or the timeout; True when woken."""
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
        self._interrupted = True
        self._wake.set()

    async def next_batch(self) -> Batch | None:
        while not self._interrupted:
            woken_idle = False
            if self._delay > 0 and self.doze and not self._dozing:
                # Before the first wait, ask for wake-ups; what committed before they were
                # promised is looked for right after.
                self._dozing = bool(await self._call(self.conn.fetchval, self.q.get("doze")))
                if self._dozing and await self._pending():
                    self._delay = 0.0
            if self._delay > 0:
                woken = woken_idle = await self._sleep(self._delay)
                if self._interrupted:
                    return None
                self.conn  # noqa: B018 - raises if the connection died while we slept
                if not woken and not await self._pending():
                    self._delay = min(max(self._delay * 2, _FIRST_BACKOFF),
                                      self.capture.poll_interval)
                    if time.monotonic() - self._returned >= HOUSEKEEPING:
                        return await self._idle_batch()
                    continue
            if self.capture.linger > 0 and not self._full:
                # Let a trickle gather into one batch (fewer, larger publishes: Ably
                # packing, per-channel rate limits); skipped while batches come full.
                await self._sleep(self.capture.linger)
                if self._interrupted:
                    return None
            elif self._busy:
                # A steady stream: let it gather for a moment, whatever wakes us, so it is
                # claimed and published in fewer, larger batches.
                await asyncio.sleep(GATHER)
            batch = await self._claim()
            if batch is not None:
                # Keep claiming without pause while rows keep coming.
                n = len(batch.events)
                self._delay = 0.0 if n else _FIRST_BACKOFF
                self._full = n >= self.capture.batch_size
                self._busy = GATHER_FROM <= n < self.capture.batch_size
                if (self._full or self._busy) and self._dozing:
                    # Busy for a while: writers need not wake us.
                    await self._call(self.conn.fetchval, self.q.get("undoze"))
                    self._dozing = False
                self._returned = time.monotonic()
                return batch
            self._full = self._busy = False
            # Nothing after all (a wake-up, or WAL written by other tables): back off too.
            self._delay = min(max(self._delay * 2, _FIRST_BACKOFF), self.capture.poll_interval)
            if woken_idle:  # a wake-up with nothing to claim: maybe a dead-letter retry
                return self._empty()
            if time.monotonic() - self._returned >= HOUSEKEEPING:
                return await self._idle_batch()
        return None

    async def _idle_batch(self) -> Batch:
        await self._idle()
        return self._empty()

    @abstractmethod
    async def _pending(self) -> bool:
        """Cheap idle check: may there be something to read?"""

    @abstractmethod
    async def _claim(self) -> Batch | None:
        """The next batch, or None when there is nothing to deliver."""

    async def _idle(self) -> None:
        """Called now and then while idle, between batches."""

    def _empty(self) -> Batch:
        self._returned = time.monotonic()
        return Batch([], None)

    async def _key_columns(
            self, tables: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, ...]]:
        """Primary key columns per table, looked up once per table per connection (a key
        change while streaming is picked up after the next reconnect)."""
        missing = [t for t in tables if t not in self._keys]
        if missing:
            rows = await self._call(self.conn.fetch, self.q.get("primary_keys"),
                                    [t[0] for t in missing], [t[1] for t in missing])
            found = {(r["schema_name"], r["table_name"]): tuple(r["columns"]) for r in rows}
            for t in missing:
                self._keys[t] = found.get(t, ())
        return self._keys

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

