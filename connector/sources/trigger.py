"""The trigger source: claims rows of the outbox the capture trigger writes.

Each batch is one transaction that deletes the claimed rows; it commits only after delivery,
so a crash re-delivers, never loses. Wake-up: the capture trigger NOTIFYs only from the one
transaction holding a transaction-level advisory lock, so most commits send nothing (a NOTIFY
per commit would serialise commits, see BASELINE.md); polling finds the others.
"""

from __future__ import annotations

from collections.abc import Sequence

from connector.config import CaptureConfig, PostgresConfig
from connector.events import ChangeEvent
from connector.parking import dead_letter_args, park_args
from connector.publishers.base import DeadLetter, Parked
from connector.sources.base import Backlog, Batch
from connector.sources.session import ConsumerSession

# The claim transaction commits without waiting for its WAL flush: a commit lost in a server
# crash only brings its outbox rows back, delivered again (the at-least-once we promise
# anyway), and the drain does not wait for an fsync per batch.
CONSUMER_SETTINGS = {"synchronous_commit": "off"}


class TriggerSource(ConsumerSession):
    settings = CONSUMER_SETTINGS

    def __init__(self, pg: PostgresConfig, capture: CaptureConfig) -> None:
        super().__init__(pg, capture)
        self._claim_sql = self.q.get("claim")

    async def _pending(self) -> bool:
        return bool(await self._call(self.conn.fetchval, self.q.get("pending")))
    async def backlog(self) -> Backlog:
        row = await self._call(self.conn.fetchrow, self.q.get("backlog"), long=True)
        parked = await self._call(self.conn.fetch, self.q.get("parked_publishers"), long=True)
        assert row is not None
        return Backlog(row["pending"], row["oldest_age"],
                       {r["publisher"]: r["messages"] for r in parked})

    async def _claim(self) -> Batch | None:
        tx = self.conn.transaction()
        await self._call(tx.start)
        try:
            rows = await self._call(self.conn.fetch, self._claim_sql, self.capture.batch_size,
                                    self.capture.max_batch_bytes, long=True)
            if not rows:
                await self._call(tx.rollback)
                return None
            keys = await self._key_columns({(r["schema_name"], r["table_name"]) for r in rows})
        except BaseException:
            await self._rollback_quietly(tx)
            raise
        events = [ChangeEvent(r["id"], r["schema_name"], r["table_name"], r["op"],
                              r["payload"].encode(),
                              keys.get((r["schema_name"], r["table_name"]), ()),
                              r["event_id"])
                  for r in rows]
        return Batch(events, tx)

    async def ack(self, batch: Batch, dead_letters: Sequence[DeadLetter] = (),
                  parked: Sequence[Parked] = ()) -> None:
        # On SourceDisconnected, whether the commit landed is unknown: the batch may be
        # delivered again.
        if dead_letters:
            await self._call(self.conn.execute, self.q.get("dead_letter"),
                             *dead_letter_args(dead_letters), long=True)
        if parked:
            await self._call(self.conn.execute, self.q.get("park"), *park_args(parked),
                             long=True)
        await self._call(batch.handle.commit, long=True)

    async def nack(self, batch: Batch) -> None:
        await self._rollback_quietly(batch.handle)
