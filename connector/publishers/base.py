"""The publisher contract, the registry of publisher types, and the delivery engine.

A publisher is small: ``open`` / ``publish(batch)`` / ``close``. It signals failure only with
the errors below, which say whether trying again can help and, for a partial failure, which
messages of the batch failed. Everything else - retries, backoff, dead letters - is the
engine's job, so each adapter stays a thin translation to its system's client library.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import jsonschema
import structlog

from connector.vocabulary import (
    DeadLetter,
    Message,
    Outcome,
    Parked,
    PartialFailure,
    PermanentError,
    PublishError,
    RetryableError,
    RetryConfig,
    backoff,
    format_path,
)

if TYPE_CHECKING:
    from connector.metrics import Metrics

__all__ = ["Attempt", "DeadLetter", "DeliveryEngine", "Outcome", "Parked", "PartialFailure",
           "PermanentError", "PublishError", "Publisher", "RetryPolicy", "RetryableError",
           "attempt"]

log = structlog.get_logger("pgconnector.publish")


class Publisher(ABC):
    """Base class of every adapter. Subclasses set ``type_name`` and, if they are not built
    in, ``options_schema`` (a JSON Schema for their options, without the ``type`` key)."""

    type_name: ClassVar[str]
    options_schema: ClassVar[dict[str, Any] | None] = None
    #: seconds the source should wait for a batch to fill before claiming it (packing)
    linger: float = 0.0

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.options = dict(options)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Problems with ``options`` as ``.key: message`` lines (built-in types are already
        checked by the config schema)."""
        if cls.options_schema is None:
            return []
        validator = jsonschema.Draft202012Validator(cls.options_schema)
        return [f".{format_path(e.absolute_path)}: {e.message}"
                for e in validator.iter_errors(dict(options))]

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; raise RetryableError when the system cannot be reached yet."""

    @abstractmethod
    async def publish(self, messages: Sequence[Message]) -> None:
        """Deliver ``messages`` in order, or raise a PublishError."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; must not raise."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4            # tries within one batch before parking its messages
    initial_backoff: float = 0.05
    max_backoff: float = 2.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with "equal" jitter: half fixed, half random, so the waits
        grow attempt after attempt while retries of many instances still spread out."""
        return backoff(attempt, self.initial_backoff, self.max_backoff)


@dataclass(frozen=True)
class Attempt:
    """One publish call's result: which messages failed and how (the others got through)."""

    failures: dict[int, PublishError]
    retry_after: float = 0.0  # the least wait a rate limit asked for, seconds

    @property
    def error(self) -> PublishError | None:
        return next(iter(self.failures.values()), None)


async def attempt(publisher: Publisher, messages: Sequence[Message],
                  metrics: Metrics | None = None) -> Attempt:
    """Publish once and sort the outcome per message (counted in ``metrics``)."""
    started = time.perf_counter()
    result = await _attempt(publisher, messages)
    if metrics is not None:
        metrics.publish_attempt(publisher.name, messages, result.failures,
                                time.perf_counter() - started)
    return result


async def _attempt(publisher: Publisher, messages: Sequence[Message]) -> Attempt:
    """An adapter that raises anything but a PublishError has a bug; its batch is treated as
    retryable, never lost."""
    try:
        await publisher.publish(messages)
        return Attempt({})
    except PartialFailure as exc:
        wait = max([e.retry_after for e in exc.failures.values()
                    if isinstance(e, RetryableError)], default=0.0)
        return Attempt(dict(exc.failures), wait)
    except PublishError as exc:
        wait = exc.retry_after if isinstance(exc, RetryableError) else 0.0
        return Attempt(dict.fromkeys(range(len(messages)), exc), wait)
    except Exception as exc:
        log.error("publisher_crashed", publisher=publisher.name,
                  error=f"{type(exc).__name__}: {exc}")
        err = RetryableError(f"{type(exc).__name__}: {exc}")
        return Attempt(dict.fromkeys(range(len(messages)), err))


class DeliveryEngine:
    """Delivers one batch of messages through the publishers, concurrently per publisher and in
    order within each, retrying a few times within the batch. What still fails is parked for
    the publisher's drain (connector/parking.py) or, past its retry limits or rejected for
    good, dead-lettered: one publisher being down never holds up the others."""

    def __init__(self, publishers: Mapping[str, Publisher], retry: RetryPolicy | None = None,
                 limits: Mapping[str, RetryConfig] | None = None,
                 metrics: Metrics | None = None) -> None:
        self.publishers = dict(publishers)
        self.retry = retry or RetryPolicy()
        self.limits = dict(limits or {})
        self.metrics = metrics

    async def deliver(self, messages: Sequence[Message]) -> Outcome:
        by_publisher: dict[str, list[Message]] = {}
        for m in messages:
            by_publisher.setdefault(m.publisher, []).append(m)
        outcome = Outcome()
        if len(by_publisher) == 1:
            (name, batch), = by_publisher.items()
            await self._deliver_one(self.publishers[name], batch, outcome)
        else:
            await asyncio.gather(*(self._deliver_one(self.publishers[n], b, outcome)
                                   for n, b in by_publisher.items()))
        return outcome

    async def _deliver_one(self, publisher: Publisher, batch: list[Message],
                           outcome: Outcome) -> None:
        limits = self.limits.get(publisher.name, RetryConfig())
        tries = self.retry.attempts
        if limits.max_attempts is not None:
            tries = min(tries, limits.max_attempts)
        pending, n = batch, 0
        while pending:
            n += 1
            result = await attempt(publisher, pending, self.metrics)
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
                if limits.gives_up(n):
                    outcome.dead += [DeadLetter(m, str(error), n) for m in pending]
                else:
                    outcome.parked += [Parked(m, str(error), n) for m in pending]
                    outcome.stalled[publisher.name] = error
                return
            await asyncio.sleep(max(self.retry.delay(n), result.retry_after))
