"""The delivery engine: one batch of messages through the sinks, with retries.

One engine serves live batches (connector/pipeline.py) and the drains of parked messages
(connector/delivery/parking.py), so both share one retry vocabulary (RetryConfig), one
dead-or-retry decision (:func:`gives_up`) and one gate per sink that keeps at most
``max_in_flight`` publish calls on it at once, whoever makes them.

Sinks are delivered to concurrently, each in order. Within one sink, a batch goes out as one
publish call, or - when the sink allows several calls at once - as up to ``max_in_flight``
calls over disjoint lanes that keep its declared ordering (all of one channel, or of one
key, in one lane, in batch order). What still fails after a few quick tries is parked for
the sink's drain or, past its retry limits or rejected for good, dead-lettered: one sink
being down never holds up the others.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from connector.metrics import Metrics
from connector.publishers.base import Publisher
from connector.vocabulary import (
    DeadLetter,
    Executor,
    Message,
    Outcome,
    Parked,
    PartialFailure,
    PermanentError,
    PublishError,
    RetryableError,
    RetryConfig,
)

log = structlog.get_logger("pgconnector.publish")

# Tries within one live batch before its undelivered messages are parked, and the waits
# between them: short, because the batch holds up every later change meanwhile.
INLINE = RetryConfig(max_attempts=4, initial_backoff=0.05, max_backoff=2.0)


def gives_up(error: PublishError, attempts: int, age: float, limits: RetryConfig) -> bool:
    """The one dead-or-retry decision: a message that failed ``attempts`` times, the first
    ``age`` seconds ago, with ``error`` last, goes to the dead letters (else it is tried
    again, later)."""
    return isinstance(error, PermanentError) or limits.gives_up(attempts, age)


@dataclass(frozen=True)
class Attempt:
    """One publish call's result: which messages failed and how (the others got through)."""

    failures: dict[int, PublishError]
    retry_after: float = 0.0  # the least wait a rate limit asked for, seconds

    @property
    def error(self) -> PublishError | None:
        return next(iter(self.failures.values()), None)


def lanes(messages: Sequence[Message], n: int, ordering: str) -> list[list[Message]]:
    """Split ``messages`` into at most ``n`` lists that may be published at once without
    breaking ``ordering``: "channel" keeps each channel in one lane, "key" each row (its
    event id's table and key; a message without one goes by channel), "none" cuts the batch
    into contiguous runs."""
    if n <= 1 or len(messages) <= 1:
        return [list(messages)]
    if ordering == "none":
        size = -(-len(messages) // n)
        return [list(messages[i:i + size]) for i in range(0, len(messages), size)]
    out: list[list[Message]] = [[] for _ in range(n)]
    for m in messages:
        if ordering == "key":
            row = m.event.row
            key = m.channel if row is None or not m.event.key else repr(
                (m.channel, [row.get(c) for c in m.event.key]))
        else:
            key = m.channel
        # crc32, not hash(): stable across processes, so a lane's order is reproducible
        out[zlib.crc32(key.encode()) % n].append(m)
    return [lane for lane in out if lane]


def lanes_by(messages: Sequence[Message], key: Callable[[Message], str | None]
             ) -> list[list[Message]]:
    """One lane per distinct key, each in batch order (a sink's own ``lane_key``)."""
    out: dict[str | None, list[Message]] = {}
    for m in messages:
        out.setdefault(key(m), []).append(m)
    return list(out.values())


class Delivery:
    def __init__(self, sinks: Mapping[str, Publisher],
                 limits: Mapping[str, RetryConfig] | None = None,
                 metrics: Metrics | None = None, inline: RetryConfig = INLINE) -> None:
        self.sinks = dict(sinks)
        self.limits = dict(limits or {})
        self.metrics = metrics
        self.inline = inline
        self._gates = {name: asyncio.Semaphore(max(1, s.max_in_flight))
                       for name, s in self.sinks.items()}

    def add(self, sink: Publisher, limits: RetryConfig) -> None:
        """A sink attached while running (a handler's subscription), from the next batch."""
        self.sinks[sink.name] = sink
        self.limits[sink.name] = limits
        self._gates[sink.name] = asyncio.Semaphore(max(1, sink.max_in_flight))

    def remove(self, name: str) -> None:
        """A sink detached: messages still routed to it are dropped (it wants no more)."""
        self.sinks.pop(name, None)

    def limits_of(self, sink: str) -> RetryConfig:
        return self.limits.get(sink, RetryConfig())

    async def attempt(self, sink: Publisher, messages: Sequence[Message],
                      tx: Executor | None = None) -> Attempt:
        """Publish once, within the sink's ``max_in_flight``, and sort the outcome per
        message (counted in the metrics). With ``tx`` (the batch's writer) a transactional
        sink writes on it."""
        gate = self._gates.get(sink.name)
        if gate is None:
            gate = self._gates[sink.name] = asyncio.Semaphore(max(1, sink.max_in_flight))
        async with gate:
            started = time.perf_counter()
            result = await _attempt(sink, messages, tx)
            elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.publish_attempt(sink.name, messages, result.failures, elapsed)
        return result

    async def deliver(self, messages: Sequence[Message], tx: Executor | None = None) -> Outcome:
        """``tx``: the batch's writer, for transactional sinks (connector/pipeline.py)."""
        by_sink: dict[str, list[Message]] = {}
        for m in messages:
            if m.publisher in self.sinks:  # else detached meanwhile
                by_sink.setdefault(m.publisher, []).append(m)
        outcome = Outcome()
        if len(by_sink) == 1:
            (name, batch), = by_sink.items()
            await self._deliver_one(self.sinks[name], batch, outcome, tx)
        elif tx is not None:
            # One connection: transactional sinks take turns on it (their savepoints must
            # not interleave).
            for name, batch in by_sink.items():
                await self._deliver_one(self.sinks[name], batch, outcome, tx)
        elif by_sink:
            await asyncio.gather(*(self._deliver_one(self.sinks[n], b, outcome, tx)
                                   for n, b in by_sink.items()))
        return outcome

    async def _deliver_one(self, sink: Publisher, batch: list[Message],
                           outcome: Outcome, tx: Executor | None) -> None:
        # One connection cannot run statements at once: a transactional sink gets one lane.
        n = 1 if tx is not None and sink.transactional else sink.max_in_flight
        if n > 1 and type(sink).lane_key is not Publisher.lane_key:
            runs = lanes_by(batch, sink.lane_key)  # the gate keeps n of them at once
        else:
            runs = lanes(batch, n, sink.ordering)
        if len(runs) == 1:
            await self._deliver_run(sink, runs[0], outcome, tx)
        else:
            await asyncio.gather(*(self._deliver_run(sink, r, outcome, tx) for r in runs))

    async def _deliver_run(self, sink: Publisher, batch: list[Message],
                           outcome: Outcome, tx: Executor | None) -> None:
        """Publish ``batch`` (in order), re-sending only what failed, up to the inline tries;
        then park the rest, or dead-letter it when its retry limits are reached."""
        limits = self.limits_of(sink.name)
        tries = self.inline.max_attempts or 1
        if limits.max_attempts is not None:
            tries = min(tries, limits.max_attempts)
        pending, n = batch, 0
        while pending:
            n += 1
            result = await self.attempt(sink, pending, tx)
            retry = []
            for i, err in sorted(result.failures.items()):
                if isinstance(err, PermanentError):
                    outcome.dead.append(DeadLetter(pending[i], str(err), n))
                else:
                    retry.append(pending[i])
            pending = retry
            if not pending:
                return
            error = next(e for e in result.failures.values() if not isinstance(e, PermanentError))
            if n >= tries:
                if gives_up(error, n, 0.0, limits):
                    outcome.dead += [DeadLetter(m, str(error), n) for m in pending]
                else:
                    outcome.parked += [Parked(m, str(error), n) for m in pending]
                    outcome.stalled[sink.name] = error
                return
            await asyncio.sleep(max(self.inline.delay(n), result.retry_after))


async def _attempt(sink: Publisher, messages: Sequence[Message],
                   tx: Executor | None) -> Attempt:
    """A sink that raises anything but a PublishError has a bug; its batch is treated as
    retryable, never lost."""
    try:
        if tx is not None and sink.transactional:
            await sink.publish_in(tx, messages)
        else:
            await sink.publish(messages)
        return Attempt({})
    except PartialFailure as exc:
        wait = max([e.retry_after for e in exc.failures.values()
                    if isinstance(e, RetryableError)], default=0.0)
        return Attempt(dict(exc.failures), wait)
    except PublishError as exc:
        wait = exc.retry_after if isinstance(exc, RetryableError) else 0.0
        return Attempt(dict.fromkeys(range(len(messages)), exc), wait)
    except Exception as exc:
        log.error("publisher_crashed", publisher=sink.name,
                  error=f"{type(exc).__name__}: {exc}")
        err = RetryableError(f"{type(exc).__name__}: {exc}")
        return Attempt(dict.fromkeys(range(len(messages)), err))
