"""The wal source: reads changes from a logical replication slot (the ``pgoutput`` plugin), so
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
message this source wrote itself once everything before it was read (``_idle``): without
that, a slot whose tables do not change would hold back WAL for ever.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from connector import pgoutput
from connector.parking import dead_letter_args, park_args
from connector.publishers.base import DeadLetter, Parked
from connector.sources.base import Backlog, Batch
from connector.sources.session import ConsumerSession
from connector.vocabulary import CaptureConfig, PostgresConfig

# Values are decoded in this session, so its settings fix their text form (connector/pgoutput.py
# maps that to JSON). Acknowledgements need no flush wait: a lost one only re-delivers.
WAL_SETTINGS = {"synchronous_commit": "off", "DateStyle": "ISO, MDY",
                "IntervalStyle": "postgres", "bytea_output": "hex", "extra_float_digits": "1"}
# One peek decodes up to this many messages (whole transactions) into the cursor; each FETCH
# of capture.batch_size of them is a batch.
PEEK_MESSAGES = 20_000
# While idle, write a position message when the slot is this far behind the WAL's end.
IDLE_LAG_BYTES = 64 * 1024
POSITION_PREFIX = "pgconnector.position"
CURSOR = "pgconnector_changes"


def slot_name(schema: str) -> str:
    """The default slot of an installation: slot names allow only [a-z0-9_]."""
    return re.sub(r"[^a-z0-9_]", "_", schema.lower())[:63] or "pgconnector"


class WalSource(ConsumerSession):
    settings = WAL_SETTINGS

    def __init__(self, pg: PostgresConfig, capture: CaptureConfig) -> None:
        super().__init__(pg, capture)
        self.slot = capture.slot or slot_name(pg.schema)
        self.publication = capture.publication or pg.schema
        self._decoder = pgoutput.Decoder()
        self._cursor = False  # a peek's cursor is open
        self._fetch_sql = self.q.get("wal_fetch", count=str(int(capture.batch_size)))
        self._type_names: dict[int, str] = {}

    async def open(self) -> None:
        self._cursor = False
        await super().open()

    async def _pending(self) -> bool:
        return bool(await self._call(self.conn.fetchval, self.q.get("wal_pending"), self.slot))

    async def _claim(self) -> Batch | None:
        while True:
            if not self._cursor:
                await self._call(self.conn.execute, self.q.get("wal_peek"), self.slot,
                                 PEEK_MESSAGES, self.publication, long=True)
                self._cursor = True
                self._decoder.reset()
            rows = await self._call(self.conn.fetch, self._fetch_sql, long=True)
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
                name = self._type_names[oid] = await self._call(
                    self.conn.fetchval, "SELECT pg_catalog.format_type($1, NULL)", oid)
            texts = [v.decode() for v in values]
            converted = await self._call(self.conn.fetch, self.q.get("wal_to_json", type=name),
                                         texts, long=True)
            for text, r in zip(texts, converted, strict=True):
                out[(oid, text.encode())] = r["value"].encode()
        return out

    async def _close_cursor(self) -> None:
        if self._cursor:
            self._cursor = False
            await self._call(self.conn.execute, f"CLOSE {CURSOR}")

    async def _advance(self, position: int) -> None:
        await self._call(self.conn.execute, self.q.get("wal_advance"), self.slot,
                         pgoutput.lsn_text(position), long=True)

    async def _idle(self) -> None:
        """A slot moves only past what it decoded: when our tables are quiet while others
        write, write a message into the WAL, whose decoding lets the next read move the slot
        up to it."""
        await self._call(self.conn.execute, self.q.get("wal_mark"), self.slot, IDLE_LAG_BYTES,
                         POSITION_PREFIX, long=True)

    async def ack(self, batch: Batch, dead_letters: Sequence[DeadLetter] = (),
                  parked: Sequence[Parked] = ()) -> None:
        # Park and dead-letter first, committed: the slot moving past them comes after, so a
        # crash between the two delivers again, never loses.
        if dead_letters or parked:
            tx = self.conn.transaction()
            await self._call(tx.start)
            try:
                if dead_letters:
                    await self._call(self.conn.execute, self.q.get("dead_letter"),
                                     *dead_letter_args(dead_letters), long=True)
                if parked:
                    await self._call(self.conn.execute, self.q.get("park"), *park_args(parked),
                                     long=True)
            except BaseException:
                await self._rollback_quietly(tx)
                raise
            await self._call(tx.commit, long=True)
        if batch.handle is not None:
            await self._advance(batch.handle)

    async def nack(self, batch: Batch) -> None:
        """Read again from the slot's position: the same changes, in the same order."""
        try:
            await self._close_cursor()
        except Exception:  # a lost connection closed it; the next open starts anew
            self._cursor = False

    async def backlog(self) -> Backlog:
        row = await self._call(self.conn.fetchrow, self.q.get("wal_backlog"), self.slot,
                               long=True)
        parked = await self._call(self.conn.fetch, self.q.get("parked_publishers"), long=True)
        return Backlog(None, None, {r["publisher"]: r["messages"] for r in parked},
                       lag_bytes=None if row is None else row["lag_bytes"])
