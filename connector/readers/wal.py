"""The wal reader: reads changes from a logical replication slot (the ``pgoutput`` plugin), so
the application's writes pay no trigger and no outbox row; the WAL they write anyway is the
record. Needs ``wal_level = logical`` and a role with the REPLICATION attribute.

Reading goes through the SQL interface on the consumer's own session (asyncpg speaks no
replication protocol), which keeps one connection for the lock, the liveness checks and the
reads: a holdable cursor over ``pg_logical_slot_peek_binary_changes`` hands out one batch per
FETCH, and acknowledging a batch moves the slot past the last transaction it completed
(``pg_replication_slot_advance``). Until then the server keeps the WAL, so nothing is lost
while the daemon is down; a batch cut inside a large transaction moves nothing, so a crash
there delivers that transaction again from its start.

The slot is only ever moved to the end of a transaction that was delivered, or to a position
message this reader wrote itself once everything before it was read (``_idle``): without
that, a slot whose tables do not change would hold back WAL for ever.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

from connector.readers import pgoutput
from connector.readers.base import Batch
from connector.readers.polling import PollingReader
from connector.readers.session import ConsumerSession
from connector.store.base import Executor
from connector.store.postgres import PostgresStore
from connector.vocabulary import CaptureConfig

# Values are decoded in this session, so its settings fix their text form (connector/readers/
# pgoutput.py maps that to JSON). Acknowledgements need no flush wait: a lost one only
# re-delivers.
WAL_SETTINGS = {"synchronous_commit": "off", "DateStyle": "ISO, MDY",
                "IntervalStyle": "postgres", "bytea_output": "hex", "extra_float_digits": "1"}
# One peek decodes up to this many messages (whole transactions) into the cursor; each FETCH
# of capture.batch_size of them is a batch.
PEEK_MESSAGES = 20_000
# While idle, write a position message when the slot is this far behind the WAL's end.
IDLE_LAG_BYTES = 64 * 1024


class WalReader(PollingReader):
    def __init__(self, session: ConsumerSession, store: PostgresStore,
                 capture: CaptureConfig) -> None:
        super().__init__(session, store, capture)
        self._decoder = pgoutput.Decoder()
        self._cursor = False  # a peek's cursor is open
        self._type_names: dict[int, str] = {}

    async def open(self) -> None:
        self._cursor = False
        await super().open()

    async def _pending(self) -> bool:
        return await self.store.wal_pending(self.session)

    async def _claim(self) -> Batch | None:
        while True:
            if not self._cursor:
                await self.store.wal_peek(self.session, PEEK_MESSAGES)
                self._cursor = True
                self._decoder.reset()
            rows = await self.store.wal_fetch(self.session, self.capture.batch_size)
            changes, position = self._decoder.feed((r["lsn"], r["data"]) for r in rows)
            if len(rows) < self.capture.batch_size:
                await self._close_cursor()
            if changes:
                events = await self._events(changes)
                return Batch(events, position)
            if position is not None:  # transactions without a published change
                await self._advance(position)
            if not self._cursor:
                return None

    async def _events(self, changes: list[pgoutput.Change]) -> list[Any]:
        keys = await self._key_columns({(c.relation.schema, c.relation.name) for c in changes})
        resolved = await self._resolve(pgoutput.Decoder.fallbacks(changes))
        return [pgoutput.event(c, resolved, keys.get((c.relation.schema, c.relation.name), ()))
                for c in changes]

    async def _resolve(self, wanted: dict[int, set[bytes]]) -> dict[tuple[int, bytes], bytes]:
        """Values of types pgoutput.py does not convert, converted by PostgreSQL's to_json:
        one query per type and batch."""
        out: dict[tuple[int, bytes], bytes] = {}
        for oid, values in wanted.items():
            name = self._type_names.get(oid)
            if name is None:
                name = self._type_names[oid] = await self.store.type_name(self.session, oid)
            texts = [v.decode() for v in values]
            converted = await self.store.to_json(self.session, name, texts)
            for text, value in zip(texts, converted, strict=True):
                out[(oid, text.encode())] = value.encode()
        return out

    async def _close_cursor(self) -> None:
        if self._cursor:
            self._cursor = False
            await self.store.wal_close(self.session)

    async def _advance(self, position: int) -> None:
        await self.store.wal_advance(self.session, pgoutput.lsn_text(position))

    async def _idle(self) -> None:
        """A slot moves only past what it decoded: when our tables are quiet while others
        write, write a message into the WAL, whose decoding lets the next read move the slot
        up to it."""
        await self.store.wal_mark(self.session, IDLE_LAG_BYTES)

    @contextlib.asynccontextmanager
    async def writer(self, batch: Batch) -> AsyncIterator[Executor]:
        """A transaction of its own, committed before ``ack`` moves the slot past the batch:
        a crash between the two delivers again, never loses."""
        tx = await self.session.begin()
        try:
            yield self.session
        except BaseException:
            await self.session.rollback_quietly(tx)
            raise
        await self.session.commit(tx)

    async def ack(self, batch: Batch) -> None:
        if batch.token is not None:
            await self._advance(cast(int, batch.token))

    async def nack(self, batch: Batch) -> None:
        """Read again from the slot's position: the same changes, in the same order."""
        try:
            await self._close_cursor()
        except Exception:  # a lost connection closed it; the next open starts anew
            self._cursor = False

    async def close(self) -> None:
        """Nothing is held but the cursor, which ends with the session."""
        self._cursor = False
