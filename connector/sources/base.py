"""The Source contract: ordered batches of change events, each acknowledged or rolled back."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.publishers.base import DeadLetter, Parked
from connector.vocabulary import ChangeEvent


@dataclass(frozen=True)
class Backlog:
    pending: int | None  # changes waiting to be claimed (None: not known, the wal source)
    oldest_age: float | None  # seconds, None when nothing waits (or not known)
    parked: Mapping[str, int]  # messages parked per publisher
    lag_bytes: int | None = None  # the wal source: WAL the slot holds back, bytes


class SourceDisconnected(Exception):
    """The source lost its database connection (and with it, the consumer lock)."""


@dataclass
class Batch:
    events: Sequence[ChangeEvent]
    handle: Any = field(default=None, repr=False)  # the source's own bookkeeping


class Source(ABC):
    #: set once the database connection is lost or stops answering (a liveness check):
    #: whoever publishes for this source must stop at once, another instance may take over
    lost: asyncio.Event
    @abstractmethod
    async def open(self) -> None:
        """Connect. Raises connector.db.DatabaseError when the database cannot be reached."""

    @abstractmethod
    async def acquire(self, on_standby: Any = None) -> None:
        """Return once this instance is the only active consumer (waits as a standby)."""

    @abstractmethod
    async def next_batch(self) -> Batch | None:
        """The next batch in order; ``None`` once ``interrupt()`` was called. An empty batch
        (no events, nothing to acknowledge) now and then while idle."""

    @abstractmethod
    async def ack(self, batch: Batch, dead_letters: Sequence[DeadLetter] = (),
                  parked: Sequence[Parked] = ()) -> None:
        """The batch is delivered, dead-lettered or parked (all in one transaction): it must
        never be delivered from the outbox again."""

    @abstractmethod
    async def nack(self, batch: Batch) -> None:
        """The batch was not delivered: it must be delivered again, in the same order."""

    @property
    @abstractmethod
    def lock(self) -> tuple[int, int]:
        """(server pid of the session holding the consumer lock, the lock's key)."""

    @abstractmethod
    async def parked_among(self, publishers: Sequence[str]) -> set[str]:
        """Which of ``publishers`` have parked messages (outside a batch)."""

    @abstractmethod
    async def backlog(self) -> Backlog:
        """What waits (outside a batch)."""

    @abstractmethod
    async def has_parked(self, publisher: str) -> bool:
        """Whether ``publisher`` has parked messages, asked inside the open batch."""

    @abstractmethod
    def interrupt(self) -> None:
        """Make a waiting ``next_batch``/``acquire`` return promptly (used to stop)."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect; an unacknowledged batch is rolled back."""
