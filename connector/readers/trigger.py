"""The trigger reader: claims rows of the outbox the capture trigger writes.

Each batch is one transaction that deletes the claimed rows; it commits only after delivery,
so a crash re-delivers, never loses. Wake-up: the capture trigger NOTIFYs only while this
reader dozes (``doze``, sql/doze.sql), and then only from the one transaction holding a
transaction-level advisory lock, so most commits send nothing (a NOTIFY per commit would
serialise commits on the server's notify queue lock, README "How it works"); polling finds
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, NamedTuple, cast

import orjson

from connector.readers.base import Batch
from connector.readers.polling import PollingReader
from connector.readers.session import ConsumerSession
from connector.store.base import Executor
from connector.store.postgres import PostgresStore
from connector.vocabulary import CaptureConfig, ChangeEvent

# The claim transaction commits without waiting for its WAL flush: a commit lost in a server
# crash only brings its outbox rows back, delivered again (the at-least-once we promise
# anyway), and the drain does not wait for an fsync per batch.
CONSUMER_SETTINGS = {"synchronous_commit": "off"}
# While the backlog fills whole batches, the server claims the next batch (in the same
# transaction, behind a savepoint) while the daemon publishes the current one, instead of each
# waiting for the other; the transaction commits after at most this many batches, so a crash
# re-delivers at most this many.
PIPELINE_BATCHES = 4


class TriggerReader(PollingReader):
    doze = True

    def __init__(self, session: ConsumerSession, store: PostgresStore,
                 capture: CaptureConfig) -> None:
        super().__init__(session, store, capture)
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
        return await self.store.pending(self.session)

    async def _claim(self) -> Batch | None:
        if self._next is not None:  # claimed while the previous batch was published
            task, self._next = self._next, None
            rows = await task
            if not rows:  # nothing more: keep what the transaction delivered
                await self._settle(rollback_from=None)
                return None
        else:
            self._claims = 0
            self._tx = await self.session.begin()
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
                and not self.session.interrupted):
            self._next = asyncio.create_task(self._claim_next(self._claims + 1))
        return Batch(events, self._claims)

    async def _relations(self, relids: set[int]) -> dict[int, _Relation]:
        """Names and key of each relation the outbox names, looked up once per relation per
        connection (a rename while streaming shows after the next reconnect)."""
        missing = [relid for relid in relids if relid not in self._names]
        if missing:
            found = await self.store.relations(self.session, missing)
            keys = await self._key_columns(set(found.values()))
            for relid in missing:
                names = found.get(relid)
                self._names[relid] = (_relation(*names, keys.get(names, ())) if names
                                      else _relation(None, None, ()))
        return self._names

    async def _claim_rows(self) -> list[Any]:
        return await self.store.claim(self.session, self.capture.batch_size,
                                      self.capture.max_batch_bytes)

    async def _claim_next(self, index: int) -> list[Any]:
        """The next batch's claim, in the same transaction behind a savepoint (so it alone can
        be rolled back), run by the server while the current batch is being published."""
        await self.store.savepoint(self.session, _savepoint(index))
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
            await self.session.rollback_quietly(tx)
            return
        try:
            if rollback_from is not None:
                await self.store.rollback_to(self.session, _savepoint(rollback_from))
            await self.session.commit(tx)
        except BaseException:
            await self.session.rollback_quietly(tx)
            raise

    @contextlib.asynccontextmanager
    async def writer(self, batch: Batch) -> AsyncIterator[Executor]:
        """The claim transaction: what is written here commits with the batch's ack. The
        batch claimed ahead (behind a later savepoint) is given back first, so nothing
        written for this batch can be rolled back with that one."""
        if self._next is not None:
            await self._settle_next()
        yield self.session

    async def ack(self, batch: Batch) -> None:
        """Commit, unless the next batch is already claimed in the same transaction: then the
        commit comes with a later batch's (a crash before it re-delivers both)."""
        # On ReaderDisconnected, whether the commit landed is unknown: the batch may be
        # delivered again.
        self._unacked = None
        if self._next is None:
            await self._settle(rollback_from=None)

    async def _settle_next(self) -> None:
        """Roll back the batch claimed ahead (it is claimed again next time)."""
        task, self._next = self._next, None
        assert task is not None
        await task
        await self.store.rollback_to(self.session, _savepoint(self._claims + 1))

    async def nack(self, batch: Batch) -> None:
        with contextlib.suppress(Exception):  # a lost connection has rolled back already
            await self._settle(rollback_from=cast(int, batch.token))

    async def close(self) -> None:
        """Keep the batches acknowledged but not yet committed (a graceful stop)."""
        if self._tx is not None:
            with contextlib.suppress(Exception):
                await self._settle(rollback_from=self._unacked)


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
