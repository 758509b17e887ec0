"""What the readers on the consumer's session share (SessionReader), and the trigger
reader's adaptive poll loop over it (PollingReader).

Polling is adaptive: immediate while changes keep coming, backing off to ``poll_interval``
when idle; a wake-up (NOTIFY) cuts the wait short. A reader with ``doze`` set has writers
that send a wake-up only while the consumer waits for one: the session holds the doze lock
(sql/doze.sql) from its first wait until changes come in a steady stream (a batch of
GATHER_FROM or more), so a busy or stopped consumer costs the writers no NOTIFY.

None of this is part of the Reader contract (connector/readers/base.py): the wal reader is
pushed its changes (connector/readers/wal.py) and has no poll loop at all.
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from typing import ClassVar

from connector.readers.base import Batch, Reader
from connector.readers.session import ConsumerSession
from connector.store.postgres import PostgresStore
from connector.vocabulary import CaptureConfig

_FIRST_BACKOFF = 0.002  # first idle poll after activity, seconds
# While idle, read_batch returns an empty batch this often (and after a wake-up that found
# nothing to claim), so the consumer can look after other things on this connection.
HOUSEKEEPING = 5.0
# A batch of GATHER_FROM or more changes that is not full means a steady stream: the next claim
# waits GATHER seconds, so a stream of thousands of changes a second is claimed and published
# in batches of dozens, not a few each (whose per-batch round trips and commits cost the
# daemon and its server session most of their CPU). A trickle is claimed as it comes.
GATHER_FROM = 8
GATHER = 0.005


class SessionReader(Reader):
    """What a reader on the consumer's session has: the session, the store, the capture
    settings, the primary keys it looked up, and the empty batch it returns while idle."""

    def __init__(self, session: ConsumerSession, store: PostgresStore,
                 capture: CaptureConfig) -> None:
        self.session = session
        self.store = store
        self.capture = capture
        self._keys: dict[tuple[str, str], tuple[str, ...]] = {}
        self._returned = time.monotonic()  # when read_batch last returned

    @property
    def lost(self) -> asyncio.Event:  # type: ignore[override]
        return self.session.lost

    async def open(self) -> None:
        self._keys.clear()

    def interrupt(self) -> None:
        self.session.interrupt()

    def _empty(self) -> Batch:
        self._returned = time.monotonic()
        return Batch([], None)

    async def _key_columns(
            self, tables: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, ...]]:
        """Primary key columns per table, looked up once per table per connection (a key
        change while streaming is picked up after the next reconnect)."""
        missing = [t for t in tables if t not in self._keys]
        if missing:
            found = await self.store.primary_keys(self.session, missing)
            for t in missing:
                self._keys[t] = found.get(t, ())
        return self._keys


class PollingReader(SessionReader):
    """The poll loop; a reader adds how it claims (``_claim``), how it checks cheaply for
    work (``_pending``) and what it does now and then while idle (``_idle``)."""

    #: the writers' wake-up depends on the doze lock
    doze: ClassVar[bool] = False

    def __init__(self, session: ConsumerSession, store: PostgresStore,
                 capture: CaptureConfig) -> None:
        super().__init__(session, store, capture)
        self._dozing = False  # the session holds the doze lock
        self._delay = 0.0
        self._full = False
        self._busy = False  # batches come, neither full nor small: gather before claiming

    async def open(self) -> None:
        await super().open()
        self._dozing = False  # the lock went with the old session
        self._delay = 0.0
        self._full = self._busy = False

    async def read_batch(self) -> Batch | None:
        while not self.session.interrupted:
            woken_idle = False
            if self._delay > 0 and self.doze and not self._dozing:
                # Before the first wait, ask for wake-ups; what committed before they were
                # promised is looked for right after.
                self._dozing = await self.store.doze(self.session)
                if self._dozing and await self._pending():
                    self._delay = 0.0
            if self._delay > 0:
                woken = woken_idle = await self.session.sleep(self._delay)
                if self.session.interrupted:
                    return None
                self.session.conn  # noqa: B018 - raises if the connection died while we slept
                if not woken and not await self._pending():
                    self._delay = min(max(self._delay * 2, _FIRST_BACKOFF),
                                      self.capture.poll_interval)
                    if time.monotonic() - self._returned >= HOUSEKEEPING:
                        return await self._idle_batch()
                    continue
            if self.capture.linger > 0 and not self._full:
                # Let a trickle gather into one batch (fewer, larger publishes: Ably
                # packing, per-channel rate limits); skipped while batches come full.
                await self.session.sleep(self.capture.linger)
                if self.session.interrupted:
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
                    await self.store.undoze(self.session)
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
