"""Parking: what a sink that is down will get once it is back.

When a sink keeps failing within a batch, its undelivered messages leave the source with the
batch and wait in the store's parked lot (recorded on the batch's writer, so nothing is
lost), and every later message for that sink is parked behind them, so per-row order holds.
A :class:`Drainer` per parked sink retries the oldest with exponential backoff, on the lot's
own connection, and moves what runs out of attempts (``publishers.X.retry``) or is rejected
for good to the dead letters. Memory stays flat whatever the outage: the database is the
buffer.

:class:`Parking` is the state machine the pipeline drives (connector/pipeline.py): a sink is
*direct* or *parked*; ``park`` moves it to parked (starting its drain), and only
``unpark_drained``, between batches or inside a batch before it parks anything, moves it back
once its lot is empty, so an empty lot cannot be refilled behind its back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Iterable, Sequence

import structlog

from connector.delivery.engine import Delivery, gives_up
from connector.metrics import Metrics, route_label
from connector.publishers.base import Publisher
from connector.store.base import Executor, ParkedLot, Store
from connector.vocabulary import Message, Parked, PublishError, RetryConfig

log = structlog.get_logger("pgconnector.parking")

IDLE_POLL = 5.0  # seconds between looks at an empty parking lot (re-queued dead letters)
PROBE = 10  # messages tried while the sink keeps failing (not a whole batch each time)


class Drainer:
    """Delivers one sink's parked messages, oldest first, while the lot hands any out (it
    stops handing out when this instance lost the lease: connector/store/base.py)."""

    def __init__(self, sink: Publisher, delivery: Delivery, lot: ParkedLot, batch_size: int,
                 metrics: Metrics | None = None,
                 on_dead: Callable[[int], None] | None = None,
                 idle_poll: float = IDLE_POLL) -> None:
        self.sink = sink
        self.idle_poll = idle_poll
        self.delivery = delivery
        self.lot = lot
        self.retry: RetryConfig = delivery.limits_of(sink.name)
        self.batch_size = batch_size
        self.metrics = metrics
        self.on_dead = on_dead  # told how many messages each round dead-lettered
        self.idle = False  # the last look found nothing parked
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.sink.name

    def start(self, failing: PublishError | None = None) -> None:
        """Start draining; ``failing`` is the error that just made the sink stall (the drain
        then waits before its first try, as long as a rate limit asked)."""
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
        with contextlib.suppress(Exception):
            await self.lot.reset()

    async def _run(self, failing: PublishError | None) -> None:
        failures = 0 if failing is None else 1
        if failing is not None:
            await asyncio.sleep(max(self.retry.delay(1), getattr(failing, "retry_after", 0.0)))
        while True:
            try:
                wait = await self.drain_once(failures)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A database error: the consumer's own session notices too and restarts
                # everything; until then, do not spin. Anything else is a bug here, which
                # must not end the drain for good either.
                log.warning("drain_failed", publisher=self.name,
                            error=f"{type(exc).__name__}: {exc}")
                await self.lot.reset()
                await self._sleep(self.idle_poll)
                continue
            if wait is None:  # delivered something: go on at once
                failures = 0
                continue
            if wait < 0:  # nothing parked
                self.idle = True
                await self._sleep(self.idle_poll)
                continue
            failures += 1
            # Not cut short by wake(): more parked messages do not make the sink any likelier
            # to be back (that would retry it once per batch).
            await asyncio.sleep(max(wait, self.retry.delay(failures)))

    async def drain_once(self, failures: int = 0) -> float | None:
        """One fetch, one try, one settling transaction. Returns None when all got through,
        -1 when nothing is parked, else the least wait a rate limit asked for. A
        transactional sink (an operator) is given the lot's transaction, in which the fetch
        locks the messages and the settling commits with what the sink wrote: applied once."""
        if self.retry.max_age is not None:
            await self._expire(self.retry.max_age)
        if not self.sink.transactional:
            return await self._drain(failures, None)
        async with self.lot.transaction() as tx:
            return await self._drain(failures, tx)

    async def _drain(self, failures: int, tx: Executor | None) -> float | None:
        head = await self.lot.head(PROBE if failures else self.batch_size)
        if not head:
            return -1.0
        self.idle = False
        messages = [p.message for p in head]
        result = await self.delivery.attempt(self.sink, messages, tx)
        delivered = [p.id for i, p in enumerate(head) if i not in result.failures]
        failed: list[tuple[int, str]] = []
        dead: list[tuple[int, str, int]] = []
        dead_messages: list[Message] = []
        for i, err in sorted(result.failures.items()):
            p = head[i]
            if gives_up(err, p.attempts + 1, p.age, self.retry):
                dead.append((p.id, str(err), p.attempts + 1))
                dead_messages.append(p.message)
            else:
                failed.append((p.id, str(err)))
        await self.lot.settle(delivered, failed, dead)
        for row_id, error, _ in dead:
            log.error("dead_lettered", publisher=self.name, parked_id=row_id, error=error)
        if dead:
            self._dead_lettered(len(dead))
            if self.metrics is not None:
                self.metrics.dead(dead_messages)
        if failed:
            if failures == 0:
                log.warning("publisher_still_unavailable", publisher=self.name,
                            error=failed[0][1], detail="messages stay parked; retrying")
            return result.retry_after
        return None

    async def _expire(self, max_age: float) -> None:
        """Messages parked longer than max_age (since their first failure) give up, whether
        or not their turn came: a long outage must not keep them past the limit."""
        expired = await self.lot.expire(max_age)
        if expired:
            log.error("dead_lettered", publisher=self.name, messages=len(expired),
                      error=f"older than retry.max_age ({max_age:g} s)")
            self._dead_lettered(len(expired))
            if self.metrics is not None:
                for route, n in collections.Counter(r for r, _ in expired).items():
                    self.metrics.dead_lettered(self.name, route_label(route), n)

    def _dead_lettered(self, n: int) -> None:
        if self.on_dead is not None:
            self.on_dead(n)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()


class Parking:
    """Which sinks are parked, each with its drain."""

    def __init__(self, delivery: Delivery, store: Store, batch_size: int,
                 metrics: Metrics | None = None,
                 on_dead: Callable[[int], None] | None = None,
                 idle_poll: float = IDLE_POLL) -> None:
        self.delivery = delivery
        self.idle_poll = idle_poll
        self.store = store
        self.batch_size = batch_size
        self.metrics = metrics
        self.on_dead = on_dead
        self.drains: dict[str, Drainer] = {}

    def __contains__(self, sink: str) -> bool:
        return sink in self.drains

    def __bool__(self) -> bool:
        return bool(self.drains)

    def park(self, sink: str, lease: tuple[int, int], failing: PublishError | None = None
             ) -> None:
        """From now on ``sink``'s messages are parked, and drained by their own task while
        ``lease`` is held."""
        if sink in self.drains or sink not in self.delivery.sinks:
            return
        drainer = Drainer(self.delivery.sinks[sink], self.delivery,
                          self.store.lot(sink, lease), self.batch_size, metrics=self.metrics,
                          on_dead=self.on_dead, idle_poll=self.idle_poll)
        self.drains[sink] = drainer
        if self.metrics is not None:
            self.metrics.set_publisher_up(sink, False)
        drainer.start(failing)

    def split(self, messages: Sequence[Message]) -> tuple[list[Parked], list[Message]]:
        """(what queues behind a parked sink's waiting messages, what goes out directly)."""
        if not self.drains:
            return [], list(messages)
        return ([Parked(m, None, 0) for m in messages if m.publisher in self.drains],
                [m for m in messages if m.publisher not in self.drains])

    def wake(self, sinks: Iterable[str]) -> None:
        for name in set(sinks):
            if name in self.drains:
                self.drains[name].wake()

    async def unpark_drained(self, ex: Executor) -> None:
        """A sink whose parked messages are all delivered gets messages directly again.
        Asked between batches, or inside a batch before it parks anything (``ex`` is then
        the batch's session)."""
        for name, drainer in list(self.drains.items()):
            if drainer.idle and not await self.store.has_parked(ex, name):
                del self.drains[name]
                if self.metrics is not None:
                    self.metrics.set_publisher_up(name, True)
                await drainer.stop()
                log.info("publisher_recovered", publisher=name)

    async def forget(self, sink: str) -> None:
        """A sink that went away (a detached handler): its drain stops."""
        drainer = self.drains.pop(sink, None)
        if drainer is not None:
            await drainer.stop()

    async def stop(self) -> None:
        drains, self.drains = list(self.drains.values()), {}
        for d in drains:
            await d.stop()

