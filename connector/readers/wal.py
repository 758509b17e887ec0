"""The wal reader: a logical replication slot's changes (the ``pgoutput`` plugin), pushed
over the replication protocol (connector/readers/replication.py), so the application's
writes pay no trigger and no outbox row, and the server decodes each change once, as it
is written. Needs ``wal_level = logical`` and a role with the REPLICATION attribute.

The consumer's session (connector/readers/session.py) still does everything else: the lease,
liveness, value conversions only PostgreSQL knows, the position messages while idle, and the
writer of a batch's dead letters and parked messages. How it keeps the Reader contract
(connector/readers/base.py):

- The stream starts at the first ``read_batch`` - only an instance holding the lease reads -
  from the slot's confirmed position or this instance's own, whichever is later; a walsender
  of an instance that lost the lease (a half-open cut) still holding the slot is ended first.
- ``read_batch`` hands out what arrived, up to ``batch_size`` messages; its token is the end
  of the newest transaction that committed in it (None when the batch ends inside one, so a
  crash there delivers that transaction again from its start). Messages with nothing of ours
  (other tables' transactions, position messages) are confirmed at once: every batch before
  was acknowledged by then.
- ``ack`` confirms the token, reported to the server at once and by the stream's status task.
- ``nack`` restarts the stream from the confirmed position: the same changes come again.

Between transactions, with nothing in flight, psycopg2 confirms the position of the
server's keepalive messages (its rule: the last message read was confirmed); a keepalive
never reports WAL the server has not flushed, and a transaction still being sent commits
after it, so this skips nothing. Heartbeats (sql/wal_heartbeat.sql), non-transactional
messages written into the WAL every HEARTBEAT seconds, and whenever the slot falls
IDLE_LAG_BYTES behind while our tables are quiet, let the slot move over other tables' WAL
too, and their round trip is the lag (``lag_seconds``). A slot PostgreSQL invalidated or
someone dropped stops the daemon (db.ChangesLost): every change it held is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast

import structlog

from connector.db import ChangesLost, DatabaseError
from connector.readers import pgoutput, polling
from connector.readers.base import Batch, ReaderDisconnected
from connector.readers.polling import SessionReader
from connector.readers.replication import ReplicationStream
from connector.readers.session import ConsumerSession
from connector.store.base import Executor
from connector.store.postgres import PostgresStore
from connector.vocabulary import CaptureConfig

log = structlog.get_logger("pgconnector.source")

# Values are decoded by the walsender and converted in the consumer's session, so both
# sessions' settings fix their text form (connector/readers/pgoutput.py maps that to JSON).
# Acknowledgements need no flush wait: a lost one only re-delivers.
WAL_SETTINGS = {"synchronous_commit": "off", "DateStyle": "ISO, MDY",
                "IntervalStyle": "postgres", "bytea_output": "hex", "extra_float_digits": "1"}
# The walsender's: its output functions write the values pgoutput sends.
STREAM_SETTINGS = {k: v for k, v in WAL_SETTINGS.items() if k != "synchronous_commit"}
# While idle, write a heartbeat when the slot is this far behind the WAL's end.
IDLE_LAG_BYTES = 64 * 1024
# A heartbeat at least this often while streaming (seconds): it measures the lag.
HEARTBEAT = 10.0
# No gathering here (unlike the trigger reader's GATHER): waiting 1 or 3 ms under a steady
# stream for larger batches saved no daemon CPU at 12,000 single-row transactions a second
# and added latency (bench/RESULTS.md, "Second look").

# The longest pause between looks for a batch's transactions to become visible (writer).
VISIBLE_POLL = 0.05

# How long one wait for the stream lasts before looking at interruption, the session and
# housekeeping again (seconds): a stop is noticed within it.
WAIT = 0.25
# Status updates at least this often, whatever the consumer does (wal_sender_timeout is
# 60 s by default).
STATUS_INTERVAL = 5.0


class WalReader(SessionReader):
    atomic_writer = False  # the slot moves after the writer committed: see Reader

    def __init__(self, session: ConsumerSession, store: PostgresStore,
                 capture: CaptureConfig) -> None:
        super().__init__(session, store, capture)
        self._decoder = pgoutput.Decoder()
        self._type_names: dict[int, str] = {}
        self.stream: ReplicationStream | None = None
        # What this instance confirmed, kept across reconnects: PostgreSQL before 17 keeps a
        # slot's confirmed position only in memory until its restart point moves (every
        # ~15 s), so after a server restart the slot may be behind what was delivered; the
        # stream then starts here (the server skips what committed before it), not there.
        self.confirmed = 0
        self._beats: deque[tuple[int, float]] = deque()  # heartbeats not confirmed yet
        self._beat_at = 0.0  # when the last one was written (monotonic)
        self._lag: float | None = None  # what the last confirmed heartbeat took (seconds)
        self._xids: set[int] = set()  # the transactions of the batch handed out

    def lag_seconds(self) -> float | None:
        """From a heartbeat's write to its confirmation: the last one's, or longer while
        one is still out."""
        if not self._beats:
            return self._lag
        return max(self._lag or 0.0, time.monotonic() - self._beats[0][1])

    async def open(self) -> None:
        await super().open()
        await self._stop_stream()

    def _new_stream(self) -> ReplicationStream:
        return ReplicationStream(self.session.pg, self.store.slot, self.store.publication,
                                 status_interval=STATUS_INTERVAL, settings=STREAM_SETTINGS)

    async def _start_stream(self) -> ReplicationStream:
        self._decoder.reset()  # a new stream describes its relations anew
        stream = self._new_stream()
        try:
            await stream.open(self.confirmed)
        except ChangesLost:
            raise
        except DatabaseError as exc:
            if "is active for PID" not in str(exc):
                raise ReaderDisconnected(str(exc)) from None
            # This instance holds the lease: a walsender still on the slot belongs to an
            # instance that lost it (its session was ended by the takeover).
            ended = await self.store.end_slot_holder(self.session)
            log.warning("ended_previous_stream", pid=ended)
            stream = self._new_stream()
            try:
                await stream.open(self.confirmed)
            except ChangesLost:
                raise
            except DatabaseError as again:
                raise ReaderDisconnected(str(again)) from None
        self.stream = stream
        return stream

    async def _stop_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            await stream.close()

    async def read_batch(self) -> Batch | None:
        while not self.session.interrupted:
            self.session.conn  # noqa: B018 - raises when the session (and the lease) is lost
            stream = self.stream or await self._start_stream()
            if time.monotonic() - self._beat_at >= HEARTBEAT:
                await self._heartbeat(periodic=True)
            try:
                messages = await stream.read(self.capture.batch_size, WAIT)
            except DatabaseError as exc:
                await self._stop_stream()
                raise ReaderDisconnected(str(exc)) from None
            if not messages:
                if time.monotonic() - self._returned >= polling.HOUSEKEEPING:
                    await self._heartbeat(periodic=False)  # when the slot falls behind
                    return self._empty()
                continue
            changes, position = self._decoder.feed((m.lsn, m.payload) for m in messages)
            if changes:
                self._xids = {c.xid for c in changes}
                events = await self._events(changes)
                self._returned = time.monotonic()
                return Batch(events, position)
            if position is not None:  # nothing of ours up to here
                self._confirm(position)
        return None

    async def ack(self, batch: Batch) -> None:
        if batch.token is not None:
            self._confirm(cast(int, batch.token))

    def _confirm(self, lsn: int) -> None:
        self.confirmed = max(self.confirmed, lsn)
        if self.stream is not None:
            self.stream.confirm(lsn)
        while self._beats and self._beats[0][0] <= lsn:
            self._lag = time.monotonic() - self._beats.popleft()[1]

    async def nack(self, batch: Batch) -> None:
        """Start again from the confirmed position: the same changes, in the same order."""
        await self._stop_stream()

    async def close(self) -> None:
        await self._stop_stream()

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

    async def _heartbeat(self, *, periodic: bool) -> None:
        """Write a heartbeat: ``periodic``, or because our tables are quiet and the slot is
        behind the WAL's end (its arrival lets the slot move up to it)."""
        now = time.monotonic()
        lsn = await self.store.heartbeat(self.session, periodic=periodic,
                                         behind_bytes=IDLE_LAG_BYTES,
                                         lag_seconds=self.lag_seconds())
        if periodic:
            self._beat_at = now
        if lsn is not None:
            self._beats.append((lsn, now))

    async def _visible(self) -> None:
        """The stream hands a transaction out once its commit record is flushed, which can
        be a moment before PostgreSQL makes it visible to other sessions: wait until the
        writer's statements see the batch's transactions, or what reads the tables there (an
        operator recomputing a key) would read the state before the change, and nothing
        would run it again. (The trigger source claims only what is visible already.) Usually
        at once; under synchronous replication, once the standby confirmed the commit."""
        xids, pause = self._xids, 0.001
        while True:
            snapshot = await self.store.snapshot(self.session)
            xids = {x for x in xids if not snapshot.committed_before(x)}
            if not xids:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, VISIBLE_POLL)

    @contextlib.asynccontextmanager
    async def writer(self, batch: Batch) -> AsyncIterator[Executor]:
        """A transaction of its own, committed before ``ack`` moves the slot past the batch:
        a crash between the two delivers again, never loses. Its commit waits for the WAL
        flush (unlike the session's other work): once the slot moves, what the batch wrote
        (an operator's effect and position, parked messages) must survive a server crash.
        It is handed out once the batch's transactions are visible to it (see _visible)."""
        tx = await self.session.begin()
        try:
            await self.session.execute("SET LOCAL synchronous_commit TO on")
            await self._visible()
            yield self.session
        except BaseException:
            await self.session.rollback_quietly(tx)
            raise
        await self.session.commit(tx)
