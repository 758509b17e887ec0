"""The Source contract: ordered batches of change events, each acknowledged or rolled back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.events import ChangeEvent
from connector.publishers.base import DeadLetter


class SourceDisconnected(Exception):
    """The source lost its database connection (and with it, the consumer lock)."""


@dataclass
class Batch:
    events: Sequence[ChangeEvent]
    handle: Any = field(default=None, repr=False)  # the source's own bookkeeping


class Source(ABC):
    @abstractmethod
    async def open(self) -> None:
        """Connect. Raises connector.db.DatabaseError when the database cannot be reached."""

    @abstractmethod
    async def acquire(self, on_standby: Any = None) -> None:
        """Return once this instance is the only active consumer (waits as a standby)."""

    @abstractmethod
    async def next_batch(self) -> Batch | None:
        """The next batch in order; ``None`` once ``interrupt()`` was called."""

    @abstractmethod
    async def ack(self, batch: Batch, dead_letters: Sequence[DeadLetter] = ()) -> None:
        """The batch is delivered (or dead-lettered): it must never be delivered again."""

    @abstractmethod
    async def nack(self, batch: Batch) -> None:
        """The batch was not delivered: it must be delivered again, in the same order."""

    @abstractmethod
    def interrupt(self) -> None:
        """Make a waiting ``next_batch``/``acquire`` return promptly (used to stop)."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect; an unacknowledged batch is rolled back."""
