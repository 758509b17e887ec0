"""Parked messages: what a publisher that is down will get once it is back.

When a publisher keeps failing within a batch, its undelivered messages leave the outbox with
the batch and wait in ``<schema>.parked`` (in the same transaction, so nothing is lost), and
every later message for that publisher is parked behind them, so per-row order holds. A
:class:`Drainer` per parked publisher retries the oldest with exponential backoff, on its own
connection, and moves what runs out of attempts (``publishers.X.retry``) or is rejected for
good to the dead letters. Memory stays flat whatever the outage: the database is the buffer.
The Connector decides when a publisher leaves the parked state (connector.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson
import structlog

from connector import db
from connector.metrics import Metrics, route_label
from connector.publishers.base import (
    DeadLetter,
    Parked,
    PermanentError,
    Publisher,
    PublishError,
    attempt,
)
from connector.sql import Queries
from connector.vocabulary import ChangeEvent, Message, PostgresConfig, RetryConfig, backoff

log = structlog.get_logger("pgconnector.parking")

IDLE_POLL = 5.0  # seconds between looks at an empty parking lot (re-queued dead letters)
PROBE = 10  # messages tried while the publisher keeps failing (not a whole batch each time)


def park_args(parked: Sequence[Parked]) -> tuple[list[Any], ...]:
    """The column arrays of sql/park.sql, in order."""
    ms = [p.message for p in parked]
    return ([m.publisher for m in ms], [m.channel for m in ms], [m.name for m in ms],
            [m.message_id for m in ms], [m.event.schema for m in ms],
            [m.event.table for m in ms], [m.event.op for m in ms],
            [orjson.dumps(m.event.key).decode() for m in ms],
            [m.payload.decode() for m in ms], [p.attempts for p in parked],
            [p.error for p in parked], [m.route for m in ms])


def dead_letter_args(dead: Sequence[DeadLetter]) -> tuple[list[Any], ...]:
    """The column arrays of sql/dead_letter.sql, in order."""
    ms = [d.message for d in dead]
    return ([m.message_id for m in ms], [m.event.schema for m in ms],
            [m.event.table for m in ms], [m.event.op for m in ms], [m.publisher for m in ms],
            [m.channel for m in ms], [m.payload.decode() for m in ms], [d.error for d in dead],
            [d.attempts for d in dead], [m.name for m in ms],
            [orjson.dumps(m.event.key).decode() for m in ms])


def to_message(publisher: str, row: asyncpg.Record) -> Message:
    """A parked row back into the message it was. The payload is what was to be published; it
    also stands in for the event (a publisher reads the rows and key from it)."""
    payload = row["payload"].encode()
    event = ChangeEvent(row["id"], row["table_schema"], row["table_name"], row["op"], payload,
                        tuple(row["key_columns"]), row["message_id"])
    return Message(publisher, row["channel"], row["name"], payload, event, row["message_id"],
                   row["route"])


class Drainer:
    """Delivers one publisher's parked messages, oldest first, while this instance holds the
    consumer lock on the session ``lock_pid`` (checked by each fetch, sql/parked_head.sql)."""

    def __init__(self, publisher: Publisher, retry: RetryConfig, pg: PostgresConfig,
                 lock_pid: int, lock_key: int, batch_size: int,
                 metrics: Metrics | None = None,
                 on_dead: Callable[[int], None] | None = None) -> None:
        self.publisher = publisher
        self.retry = retry
        self.pg = pg
        self.q = Queries(pg.schema)
        self.lock_pid = lock_pid
        self.lock_key = lock_key
        self.batch_size = batch_size
        self.metrics = metrics
        self.on_dead = on_dead  # told how many messages each round dead-lettered
        self.idle = False  # the last look found nothing parked
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.publisher.name

    def start(self, failing: PublishError | None = None) -> None:
        """Start draining; ``failing`` is the error that just made the publisher stall (the
        drain then waits before its first try, as long as a rate limit asked)."""
        self._task = asyncio.create_task(self._run(failing), name=f"drain:{self.name}")

    def wake(self) -> None:
        """More was parked: look now."""
        self.idle = False
        self._wake.set()

    async def stop(self) -> None:
        """Stop at once; a try in flight is abandoned (its messages stay parked and are tried
        again later: a duplicate at worst, never a loss)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self, failing: PublishError | None) -> None:
        failures = 0 if failing is None else 1
        conn: asyncpg.Connection | None = None
        if failing is not None:
            await asyncio.sleep(max(backoff(1, self.retry.initial_backoff,
                                            self.retry.max_backoff),
                                    getattr(failing, "retry_after", 0.0)))
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await db.connect(self.pg)
                    wait = await self._drain_once(conn, failures)
                except (db.DatabaseError, OSError, asyncpg.PostgresError,
                        asyncpg.InterfaceError, TimeoutError) as exc:
                    # The consumer's own connection notices too and restarts everything;
                    # until then, do not spin.
                    log.warning("drain_database_error", publisher=self.name, error=str(exc))
                    if conn is not None:
                        conn.terminate()
                        conn = None
                    await self._sleep(IDLE_POLL)
                    continue
                except Exception as exc:  # a bug here must not end the drain for good
                    log.error("drain_failed", publisher=self.name,
                              error=f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(IDLE_POLL)
                    continue
                if wait is None:  # delivered something: go on at once
                    failures = 0
                    continue
                if wait < 0:  # nothing parked
                    self.idle = True
                    await self._sleep(IDLE_POLL)
                    continue
                failures += 1
                # Not cut short by wake(): more parked messages do not make the publisher
                # any likelier to be back (that would retry it once per batch).
                await asyncio.sleep(max(wait, backoff(failures, self.retry.initial_backoff,
                                                      self.retry.max_backoff)))
        finally:
            if conn is not None and not conn.is_closed():
                conn.terminate()

    async def _drain_once(self, conn: asyncpg.Connection, failures: int) -> float | None:
        """One fetch, one try, one settling transaction. Returns None when all got through,
        -1 when nothing is parked, else the least wait a rate limit asked for."""
        if self.retry.max_age is not None:
            await self._expire(conn)
        limit = PROBE if failures else self.batch_size
        rows = await conn.fetch(self.q.get("parked_head"), self.name, limit, self.lock_pid,
                                self.lock_key)
        if not rows:
            return -1.0
        self.idle = False
        messages = [to_message(self.name, r) for r in rows]
        result = await attempt(self.publisher, messages, self.metrics)
        delivered = [r["id"] for i, r in enumerate(rows) if i not in result.failures]
        failed_ids, failed_errors = [], []
        dead: list[int] = []  # indexes into rows
        for i, err in sorted(result.failures.items()):
            row = rows[i]
            if isinstance(err, PermanentError) or self.retry.gives_up(row["attempts"] + 1,
                                                                      row["age"]):
                dead.append(i)
            else:
                failed_ids.append(row["id"])
                failed_errors.append(str(err))
        dead_ids = [rows[i]["id"] for i in dead]
        dead_errors = [str(result.failures[i]) for i in dead]
        dead_attempts = [rows[i]["attempts"] + 1 for i in dead]
        async with conn.transaction():
            if delivered:
                await conn.execute(self.q.get("parked_delivered"), delivered)
            if failed_ids:
                await conn.execute(self.q.get("parked_failed"), failed_ids, failed_errors)
            if dead_ids:
                await conn.execute(self.q.get("parked_to_dead"), dead_ids, dead_errors,
                                   dead_attempts)
        for row_id, error in zip(dead_ids, dead_errors, strict=True):
            log.error("dead_lettered", publisher=self.name, parked_id=row_id, error=error)
        if dead:
            self._dead_lettered(len(dead))
        if self.metrics is not None and dead:
            self.metrics.dead(messages[i] for i in dead)
        if failed_ids:
            if failures == 0:
                log.warning("publisher_still_unavailable", publisher=self.name,
                            error=failed_errors[0], detail="messages stay parked; retrying")
            return result.retry_after
        return None

    async def _expire(self, conn: asyncpg.Connection) -> None:
        """Messages parked longer than max_age (since their first failure) give up, whether
        or not their turn came: a long outage must not keep them past the limit."""
        rows = await conn.fetch(self.q.get("parked_expired"), self.name, self.retry.max_age)
        if rows:
            await conn.execute(self.q.get("parked_to_dead"), [r["id"] for r in rows],
                               [f"gave up after {self.retry.max_age:g} s: {r['last_error']}"
                                for r in rows],
                               [r["attempts"] for r in rows])
            log.error("dead_lettered", publisher=self.name, messages=len(rows),
                      error=f"older than retry.max_age ({self.retry.max_age:g} s)")
            self._dead_lettered(len(rows))
            if self.metrics is not None:
                for route, n in collections.Counter(r["route"] for r in rows).items():
                    self.metrics.dead_lettered(self.name, route_label(route), n)

    def _dead_lettered(self, n: int) -> None:
        if self.on_dead is not None:
            self.on_dead(n)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()
