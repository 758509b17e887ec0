"""What can become of a message: the errors a sink raises and the outcome of a batch.

A sink signals failure only with the errors below, which say whether trying again can help
and, for a partial failure, which messages of the batch failed. The delivery engine
(connector/delivery/) turns them into an :class:`Outcome`: delivered, except what is dead
(dead letters) or parked (waiting in the database for a sink that is down).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from connector.vocabulary.events import Message


class PublishError(Exception):
    """Base of what a sink's ``publish`` may raise. The text must not contain secrets."""


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


@dataclass(frozen=True)
class DeadLetter:
    message: Message
    error: str
    attempts: int


@dataclass(frozen=True)
class Parked:
    """A message left for later: its sink is down (or already has messages waiting, which
    this one must not overtake). It waits in the database, not in memory."""

    message: Message
    error: str | None  # the last failure; None when not tried yet
    attempts: int


@dataclass
class Outcome:
    """What became of a batch: delivered, except ``dead`` and ``parked``; ``stalled`` names
    the sinks that stayed unavailable (their undelivered messages are in ``parked``)."""

    dead: list[DeadLetter] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)
    stalled: dict[str, PublishError] = field(default_factory=dict)
