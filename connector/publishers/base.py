"""The publisher contract, the registry of publisher types, and the delivery engine.

A publisher is small: ``open`` / ``publish(batch)`` / ``close``. It signals failure only with
the errors below, which say whether trying again can help and, for a partial failure, which
messages of the batch failed. Everything else - retries, backoff, dead letters - is the
engine's job, so each adapter stays a thin translation to its system's client library.
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

import structlog

from connector.events import Message

log = structlog.get_logger("pgconnector.publish")


class PublishError(Exception):
    """Base of what ``Publisher.publish`` may raise. The text must not contain secrets."""


class RetryableError(PublishError):
    """Nothing (or nothing certain) was delivered; the same batch may succeed later.

    ``retry_after`` is the least wait the system asked for (a rate limit), in seconds."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(PublishError):
    """These messages can never be delivered as they are (rejected, too large, forbidden)."""


class PartialFailure(PublishError):
    """Some messages of the batch failed, the others were delivered.

    ``failures`` maps the index of each failed message in the batch to a RetryableError or a
    PermanentError."""

    def __init__(self, failures: Mapping[int, PublishError]) -> None:
        self.failures = dict(failures)
        first = next(iter(self.failures.values()), None)
        super().__init__(f"{len(self.failures)} message(s) failed; first: {first}")


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
        import jsonschema

        from connector.config import format_path

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


_BUILTIN = {
    "ably": "connector.publishers.ably:AblyPublisher",
    "redis": "connector.publishers.redis:RedisPublisher",
    "stdout": "connector.publishers.stdout:StdoutPublisher",
}


def publisher_class(type_name: str) -> type[Publisher]:
    """The adapter class for ``type_name``: built-in, or from the ``pgconnector.publishers``
    entry-point group (how a third-party package ships an adapter)."""
    target = _BUILTIN.get(type_name)
    if target is None:
        for ep in entry_points(group="pgconnector.publishers"):
            if ep.name == type_name:
                target = ep.value
                break
    if target is None:
        plugins = {ep.name for ep in entry_points(group="pgconnector.publishers")}
        names = sorted(set(_BUILTIN) | plugins)
        raise LookupError(f"unknown publisher type {type_name!r} (available: {', '.join(names)})")
    module_name, _, attr = target.partition(":")
    import importlib

    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Publisher)):
        raise LookupError(f"publisher type {type_name!r}: {target} is not a Publisher")
    return cls


@dataclass(frozen=True)
class DeadLetter:
    message: Message
    error: str
    attempts: int


class DeliveryStalled(Exception):
    """A publisher kept failing with retryable errors; the batch must be retried later."""

    def __init__(self, publisher: str, error: PublishError, retry_after: float = 0.0) -> None:
        self.publisher = publisher
        self.error = error
        self.retry_after = retry_after  # the least wait the system asked for, seconds
        super().__init__(f"publisher {publisher!r}: {error}")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4            # tries within one batch before handing it back
    initial_backoff: float = 0.05
    max_backoff: float = 2.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with "equal" jitter: half fixed, half random, so the waits
        grow attempt after attempt while retries of many instances still spread out."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2.0 ** attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class DeliveryEngine:
    """Delivers one batch of messages through the publishers, concurrently per publisher and in
    order within each. Returns the messages to dead-letter; raises DeliveryStalled when a
    publisher stays unavailable (the caller rolls the batch back and retries it later)."""

    def __init__(self, publishers: Mapping[str, Publisher], retry: RetryPolicy | None = None):
        self.publishers = dict(publishers)
        self.retry = retry or RetryPolicy()

    async def deliver(self, messages: Sequence[Message]) -> list[DeadLetter]:
        by_publisher: dict[str, list[Message]] = {}
        for m in messages:
            by_publisher.setdefault(m.publisher, []).append(m)
        if len(by_publisher) == 1:
            (name, batch), = by_publisher.items()
            return await self._deliver_one(self.publishers[name], batch)
        results = await asyncio.gather(
            *(self._deliver_one(self.publishers[n], b) for n, b in by_publisher.items()),
            return_exceptions=True)
        dead: list[DeadLetter] = []
        for r in results:
            if isinstance(r, BaseException):
                raise r
            dead += r
        return dead

    async def _deliver_one(self, publisher: Publisher, batch: list[Message]) -> list[DeadLetter]:
        pending, dead, attempt = batch, list[DeadLetter](), 0
        last: PublishError = RetryableError("not attempted")
        while pending:
            attempt += 1
            wait = 0.0
            try:
                await publisher.publish(pending)
                return dead
            except PartialFailure as exc:
                retry = []
                for i, err in sorted(exc.failures.items()):
                    if isinstance(err, PermanentError):
                        dead.append(DeadLetter(pending[i], str(err), attempt))
                    else:
                        retry.append(pending[i])
                        if isinstance(err, RetryableError):
                            wait = max(wait, err.retry_after)
                pending = retry
                last = exc
            except PermanentError as exc:
                dead += [DeadLetter(m, str(exc), attempt) for m in pending]
                return dead
            except RetryableError as exc:
                last = exc
                wait = exc.retry_after
            except Exception as exc:  # an adapter bug must not lose the batch: retry it
                log.error("publisher_crashed", publisher=publisher.name,
                          error=f"{type(exc).__name__}: {exc}")
                last = RetryableError(f"{type(exc).__name__}: {exc}")
            if not pending:
                break
            if attempt >= self.retry.attempts:
                raise DeliveryStalled(publisher.name, last, wait)
            await asyncio.sleep(max(self.retry.delay(attempt), wait))
        return dead
