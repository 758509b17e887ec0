"""The trigger source: claims rows of the outbox the capture trigger writes.

Each batch is one transaction that deletes the claimed rows; it commits only after delivery,
so a crash re-delivers, never loses. Wake-up: the capture trigger NOTIFYs only while this
source dozes (``doze``, sql/doze.sql), and then only from the one transaction holding a
transaction-level advisory lock, so most commits send nothing (a NOTIFY per commit would
serialise commits on the server's notify queue lock, README "How it works"); polling finds
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from connector.parking import dead_letter_args, park_args
from connector.publishers.base import DeadLetter, Parked
from connector.sources.base import Backlog, Batch
from connector.sources.session import ConsumerSession
from connector.vocabulary import CaptureConfig, ChangeEvent, PostgresConfig

# The claim transaction commits without waiting for its WAL flush: a commit lost in a server
# crash only brings its outbox rows back, delivered again (the at-least-once we promise
# anyway), and the drain does not wait for an fsync per batch.
CONSUMER_SETTINGS = {"synchronous_commit": "off"}
# While the backlog fills whole batches, the server claims the next batch (in the same
# transaction, behind a savepoint) while the daemon publishes the current one, instead of each
# waiting for the other; the transaction commits after at most this many batches, so a crash
# re-delivers at most this many.
PIPELINE_BATCHES = 4


class TriggerSource(ConsumerSession):
    settings = CONSUMER_SETTINGS
    doze = True

    def __init__(self, pg: PostgresConfig, capture: CaptureConfig) -> None:
        super().__init__(pg, capture)
        self._claim_sql = self.q.get("claim")
        # The claim transaction and its batches: the first claim, then up to
        # PIPELINE_BATCHES - 1 more, each claimed while the one before is published.
        self._tx: Any = None
        self._claims = 0  # batches claimed in it
        self._unacked: int | None = None  # the batch handed out and not acknowledged yet
        self._next: asyncio.Task[list[Any]] | None = None  # the next batch's claim, running
        self._names: dict[int, _Relation] = {}  # by relid

    async def open(self) -> None:
        self._tx, self._claims, self._unacked, self._next = None, 0, None, None
        self._names.clear()
        await super().open()

    async def _pending(self) -> bool:
        return bool(await self._call(self.conn.fetchval, self.q.get("pending")))
    async def backlog(self) -> Backlog:
        row = await self._call(self.conn.fetchrow, self.q.get("backlog"), long=True)
        parked = await self._call(self.conn.fetch, self.q.get("parked_publishers"), long=True)
        assert row is not None
        return Backlog(row["pending"], row["oldest_age"],
                       {r["publisher"]: r["messages"] for r in parked})

    async def _claim(self) -> Batch | None:
        if self._next is not None:  # claimed while the previous batch was published
            task, self._next = self._next, None
            rows = await task
            if not rows:  # nothing more: keep what the transaction delivered
                await self._settle(rollback_from=None)
                return None
        else:
            self._tx = self.conn.transaction()
            self._claims = 0
            await self._call(self._tx.start)
            try:
                rows = await self._claim_rows()
            except BaseException:
                await self._settle(rollback_from=1)
                raise
            if not rows:
                await self._settle(rollback_from=1)
                return None
        self._claims += 1
        try:
            relations = await self._relations({r["relid"] for r in rows})
        except BaseException:
            await self._settle(rollback_from=self._claims)
            raise
        events = []
        for r in rows:
            rel = relations[r["relid"]]
            event_id = r["event_id"]
            op = r["op"]
            # The claim built the envelope from "new" on; its head is put on here.
            payload = b"".join((b'{"id":"', event_id.encode(), rel.heads[op],
                                r["tail"].encode()))
            events.append(ChangeEvent(r["id"], rel.schema, rel.table, op, payload, rel.key,
                                      event_id))
        self._unacked = self._claims
        if (len(rows) >= self.capture.batch_size and self._claims < PIPELINE_BATCHES
                and not self._interrupted):
            self._next = asyncio.create_task(self._claim_next(self._claims + 1))
        return Batch(events, self._claims)

    async def _relations(self, relids: set[int]) -> dict[int, _Relation]:
        """Names and key of each relation the outbox names, looked up once per relation per
        connection (a rename while streaming shows after the next reconnect)."""
        missing = [relid for relid in relids if relid not in self._names]
        if missing:
            rows = await self._call(self.conn.fetch, self.q.get("relations"), missing)
            found = {r["relid"]: (r["schema_name"], r["table_name"]) for r in rows}
            keys = await self._key_columns(set(found.values()))
            for relid in missing:
                names = found.get(relid)
                self._names[relid] = (_relation(*names, keys.get(names, ())) if names
                                      else _relation(None, None, ()))
        return self._names

    async def _claim_rows(self) -> list[Any]:
        rows: list[Any] = await self._call(self.conn.fetch, self._claim_sql,
                                           self.capture.batch_size,
                                           self.capture.max_batch_bytes, long=True)
        return rows

    async def _claim_next(self, index: int) -> list[Any]:
        """The next batch's claim, in the same transaction behind a savepoint (so it alone can
        be rolled back), run by the server while the current batch is being published."""
        await self._call(self.conn.execute, f"SAVEPOINT {_savepoint(index)}")
        return await self._claim_rows()

    async def _settle(self, rollback_from: int | None) -> None:
        """End the claim transaction, keeping the batches before ``rollback_from`` (those were
        acknowledged) and rolling back that one and the rest (None: keep everything)."""
        tx, self._tx = self._tx, None
        self._unacked = None
        if self._next is not None:  # claimed but never handed out: roll it back too
            task, self._next = self._next, None
            with contextlib.suppress(Exception):
                await task
            rollback_from = min(rollback_from or self._claims + 1, self._claims + 1)
        if tx is None:
            return
        if rollback_from == 1:
            await self._rollback_quietly(tx)
            return
        try:
            if rollback_from is not None:
                await self._call(self.conn.execute,
                                 f"ROLLBACK TO SAVEPOINT {_savepoint(rollback_from)}")
            await self._call(tx.commit, long=True)
        except BaseException:
            await self._rollback_quietly(tx)
            raise

    async def ack(self, batch: Batch, dead_letters: Sequence[DeadLetter] = (),
                  parked: Sequence[Parked] = ()) -> None:
        """Commit, unless the next batch is already claimed in the same transaction: then the
        commit comes with a later batch's (a crash before it re-delivers both)."""
        # On SourceDisconnected, whether the commit landed is unknown: the batch may be
        # delivered again.
        self._unacked = None
        if (dead_letters or parked) and self._next is not None:
            # They must not land behind the next batch's savepoint: give that batch back.
            await self._settle_next()
        if dead_letters:
            await self._call(self.conn.execute, self.q.get("dead_letter"),
                             *dead_letter_args(dead_letters), long=True)
        if parked:
            await self._call(self.conn.execute, self.q.get("park"), *park_args(parked),
                             long=True)
        if self._next is None:
            await self._settle(rollback_from=None)

    async def _settle_next(self) -> None:
        """Roll back the batch claimed ahead (it is claimed again next time)."""
        task, self._next = self._next, None
        assert task is not None
        await task
        await self._call(self.conn.execute,
                         f"ROLLBACK TO SAVEPOINT {_savepoint(self._claims + 1)}")

    async def nack(self, batch: Batch) -> None:
        with contextlib.suppress(Exception):  # a lost connection has rolled back already
            await self._settle(rollback_from=int(batch.handle))

    async def close(self) -> None:
        """Keep the batches acknowledged but not yet committed (a graceful stop)."""
        if self._tx is not None:
            with contextlib.suppress(Exception):
                await self._settle(rollback_from=self._unacked)
        await super().close()


class _Relation(NamedTuple):
    schema: str
    table: str
    key: tuple[str, ...]
    heads: dict[str, bytes]  # per op, the envelope between "id" and "new": '","op":…,"table":…'


_OPS = ("insert", "update", "delete", "truncate")


def _relation(schema: str | None, table: str | None, key: tuple[str, ...]) -> _Relation:
    """A relation known nowhere (dropped, then forgotten by install) has null names: its
    changes stay deliverable, and no route names it."""
    if schema is None or table is None:
        names = b'"schema":null,"table":null'
        schema = table = ""
    else:
        names = b'"schema":' + orjson.dumps(schema) + b',"table":' + orjson.dumps(table)
    return _Relation(schema, table, key,
                     {op: b'","op":"' + op.encode() + b'",' + names for op in _OPS})


def _savepoint(index: int) -> str:
    return f"pgconnector_batch_{int(index)}"
