"""The pipeline: read → route → deliver → record → ack, once per batch.

It runs while this instance holds the lease (connector/connector.py starts it and restarts
it after a reconnect). Per batch:

1. ``reader.read_batch()``; an empty batch means idle: look after the parked sinks and the
   gauges (housekeeping) and read again; ``None`` ends the run.
2. Parked sinks whose lot is empty get messages directly again (asked inside the batch,
   before it parks anything).
3. ``router.route(events)`` → messages; those of a parked sink queue behind what it has
   waiting; the rest go to ``delivery.deliver`` - unless the reader's session is lost
   meanwhile: then this instance may no longer be the only active one, so publishing stops
   at once and the batch is delivered again by whoever holds the lease.
4. On ``reader.writer(batch)``: the messages of transactional sinks are delivered (they
   write on it), then the store records the outcome's dead letters and parked messages, and
   where each transactional sink stands (with a writer not atomic with the ack, what a
   transactional sink took already was dropped in 3: it is applied once); then
   ``reader.ack(batch)``. Any failure before the ack: ``reader.nack(batch)``, and the
   error goes up.
5. Sinks that stalled are parked (their drain starts); the metrics and stats count the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from connector.delivery.engine import Delivery
from connector.delivery.parking import Parking
from connector.metrics import Metrics
from connector.readers.base import Batch, Reader, ReaderDisconnected
from connector.router import Router
from connector.store.base import Applied, Executor, Store
from connector.vocabulary import Message, Outcome

log = structlog.get_logger("pgconnector")

# Between batches, the gauges are refreshed at most this often (seconds).
HOUSEKEEPING = 5.0


@dataclass
class Stats:
    events: int = 0
    messages: int = 0
    batches: int = 0
    dead_letters: int = 0
    parked: int = 0
    reconnects: int = 0


class Pipeline:
    """One reader's batches through the router and the delivery engine. ``session`` is the
    executor for what runs between batches (the reader's session); ``lease()`` gives the
    held lease a drain checks."""

    def __init__(self, reader: Reader, router: Router, delivery: Delivery, parking: Parking,
                 store: Store, session: Executor, lease: Callable[[], tuple[int, int]],
                 metrics: Metrics, stats: Stats | None = None) -> None:
        self.reader = reader
        self.router = router
        self.delivery = delivery
        self.parking = parking
        self.store = store
        self.session = session
        self.lease = lease
        self.metrics = metrics
        self.stats = stats or Stats()
        self.housekept = 0.0  # when the gauges were last refreshed (monotonic)
        self.housekeeping_rounds = 0  # completed refreshes, for whoever waits on one
        self._stopping = False
        self._warned_limit = False  # the slot-near-its-limit warning, once per episode
        # Sinks delivered on the batch's writer (their effect commits with the ack).
        self._in_tx = frozenset(n for n, s in delivery.sinks.items() if s.transactional)
        # Where each of them stands (ChangeEvent.order of the last change it took), when the
        # writer is not atomic with the ack: what is at or before it is not theirs again.
        self.applied: dict[str, tuple[int, int]] = {}

    def stop(self) -> None:
        """Finish the batch in hand, then return from ``run``."""
        self._stopping = True
        self.reader.interrupt()

    async def start(self) -> None:
        """Called once the lease is held: messages parked before (by this or another
        instance) go first."""
        if self._in_tx and not self.reader.atomic_writer:
            self.applied = await self.store.applied(self.session, sorted(self._in_tx))
        for name in await self.store.parked_among(self.session, sorted(self.delivery.sinks)):
            self.parking.park(name, self.lease())

    async def run(self) -> None:
        while not self._stopping:
            batch = await self.reader.read_batch()
            if batch is None:
                return
            if not batch.events:
                await self.idle()
                continue
            await self.process(batch)

    async def idle(self) -> None:
        """Between batches, while idle: the gauges, the parked sinks, re-queued dead letters."""
        await self.housekeeping()
        await self.parking.unpark_drained(self.session)
        for name in await self.store.parked_among(  # re-queued dead letters?
                self.session, sorted(set(self.delivery.sinks) - set(self.parking.drains))):
            self.parking.park(name, self.lease())

    async def process(self, batch: Batch) -> Outcome:
        try:
            await self.parking.unpark_drained(self.session)
            messages = self.router.route(batch.events)
            taken: list[Applied] = []
            if self._in_tx:
                messages, taken = self._transactional(messages)
            # A parked sink's messages queue behind what it already has waiting.
            waiting, direct = self.parking.split(messages)
            in_tx: list[Message] = []
            if self._in_tx:
                in_tx = [m for m in direct if m.publisher in self._in_tx]
                direct = [m for m in direct if m.publisher not in self._in_tx]
            outcome = await self._deliver(direct) if direct else Outcome()
            if in_tx or taken or outcome.dead or waiting or outcome.parked:
                async with self.reader.writer(batch) as tx:
                    if in_tx:
                        more = await self._deliver(in_tx, tx)
                        outcome.dead += more.dead
                        outcome.parked += more.parked
                        outcome.stalled.update(more.stalled)
                    parked = waiting + outcome.parked
                    if outcome.dead or parked:
                        await self.store.record(tx, outcome.dead, parked)
                    if taken:
                        await self.store.record_applied(tx, taken)
                if not self.reader.atomic_writer:  # committed: taken
                    self.applied.update((a.sink, a.order) for a in taken)
            parked = waiting + outcome.parked
            await self.reader.ack(batch)
        except BaseException:
            await self.reader.nack(batch)
            raise
        for name, error in outcome.stalled.items():
            log.warning("publisher_unavailable", publisher=name, error=str(error),
                        detail="its messages wait in the database; retrying")
            self.parking.park(name, self.lease(), error)
        self.parking.wake(p.message.publisher for p in waiting)
        for d in outcome.dead:
            log.error("dead_lettered", publisher=d.message.publisher,
                      channel=d.message.channel, event_id=d.message.message_id, error=d.error)
        self.metrics.batch_claimed(batch.events)
        self.metrics.dead(d.message for d in outcome.dead)
        if time.monotonic() - self.housekept >= HOUSEKEEPING:
            await self.housekeeping()
        self.stats.batches += 1
        self.stats.events += len(batch.events)
        self.stats.messages += len(messages)
        self.stats.dead_letters += len(outcome.dead)
        self.stats.parked += len(parked)
        log.debug("batch_delivered", events=len(batch.events), messages=len(messages))
        return outcome

    def _transactional(self, messages: list[Message]) -> tuple[list[Message], list[Applied]]:
        """Drop what transactional sinks took already (a batch read again after the writer
        committed and the ack did not happen: wal only), and note the last change each takes
        now, to record on the writer."""
        applied, skip = self.applied, not self.reader.atomic_writer
        last: dict[str, Message] = {}
        counts: dict[str, int] = {}
        kept: list[Message] = []
        for m in messages:
            name = m.publisher
            if name in self._in_tx:
                if skip and name in applied and m.event.order <= applied[name]:
                    continue
                last[name] = m
                counts[name] = counts.get(name, 0) + 1
            kept.append(m)
        return kept, [Applied(n, m.event.order, m.message_id, counts[n])
                      for n, m in last.items()]

    async def _deliver(self, messages: list[Message], tx: Executor | None = None) -> Outcome:
        """Deliver, unless the reader's session dies meanwhile (then stop publishing: see
        the module's docstring)."""
        delivery = asyncio.ensure_future(self.delivery.deliver(messages, tx))
        lost = asyncio.ensure_future(self.reader.lost.wait())
        try:
            await asyncio.wait({delivery, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not delivery.done():
                delivery.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await delivery
        if delivery.cancelled():
            raise ReaderDisconnected("database connection lost while publishing; stopped")
        return delivery.result()

    async def housekeeping(self) -> None:
        """Refresh the backlog gauges (between batches, on the reader's session)."""
        started = time.monotonic()
        backlog = await self.store.backlog(self.session)
        self.metrics.set_backlog(backlog.pending, backlog.oldest_age)
        if (slot := backlog.slot) is not None:
            self.metrics.set_slot(lag_bytes=slot.lag_bytes, retained_bytes=slot.retained_bytes,
                                  safe_wal_bytes=slot.safe_wal_bytes, near_limit=slot.near_limit,
                                  lag_seconds=self.reader.lag_seconds())
            if slot.near_limit and not self._warned_limit:
                log.warning("slot_near_limit", retained_bytes=slot.retained_bytes,
                            safe_wal_bytes=slot.safe_wal_bytes, wal_status=slot.wal_status,
                            detail="PostgreSQL invalidates the slot (its changes are lost) "
                            "once max_slot_wal_keep_size is exceeded")
            self._warned_limit = slot.near_limit
        for name in self.delivery.sinks:
            self.metrics.set_parked(name, backlog.parked.get(name, 0))
            self.metrics.set_publisher_up(name, name not in self.parking)
        # Stamped when the round began (what it read is at least that fresh), counted when
        # it ended: a waiter that saw round n finish knows the gauges hold what round n read.
        self.housekept = started
        self.housekeeping_rounds += 1
