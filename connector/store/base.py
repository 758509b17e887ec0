"""The Store contract: what the engine asks of the connector's own schema, and when.

Everything that runs SQL on the connector's schema sits behind this (connector/store/
postgres.py for PostgreSQL, connector/testing.py in memory). Each call takes the
:class:`Executor` it must run on, because *where* a write happens is part of its meaning:
dead letters and parked messages are written on the batch's writer (connector/readers/base.py
``Reader.writer``), so they become durable together with (trigger: atomically with) the
batch's acknowledgement; everything else runs on the consumer's session between batches.

When the engine calls what (connector/pipeline.py, connector/delivery/parking.py):

- ``parked_among``: after the lease is won and now and then while idle, outside a batch: which
  sinks have messages waiting (those start parked, drained first).
- ``has_parked``: inside an open batch, before it parks anything: whether a parked sink's lot
  is empty, so it may take messages directly again.
- ``record``: with a batch's outcome, on the batch's writer, before ``Reader.ack``.
- ``backlog``: between batches (housekeeping), for the gauges.
- ``lot``: a parked sink's drain opens one; it runs on a connection of its own.
- ``applied``: after the lease is won, for the transactional sinks (operators): the last
  change each took. ``record_applied``: on the batch's writer, with ``record``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from connector.vocabulary import DeadLetter, Executor, Message, Parked, Row

__all__ = ["Applied", "Backlog", "Executor", "ParkedLot", "ParkedMessage", "Row", "SlotState",
           "Store"]

# A slot counts as close to its limit once less than this share of max_slot_wal_keep_size
# may still be written before PostgreSQL invalidates it.
NEAR_LIMIT_SHARE = 0.2


@dataclass(frozen=True)
class SlotState:
    """A replication slot as the wal source sees it (pg_replication_slots)."""

    lag_bytes: int  # the WAL's end minus the confirmed position
    retained_bytes: int  # the WAL the slot keeps the server from removing
    wal_status: str  # reserved, extended, unreserved (or lost)
    safe_wal_bytes: int | None  # what may still be written before it is invalidated
    keep_bytes: int | None  # max_slot_wal_keep_size (None: unlimited)

    @property
    def near_limit(self) -> bool:
        """Close to being invalidated (its changes lost): less than NEAR_LIMIT_SHARE of
        max_slot_wal_keep_size left, or PostgreSQL no longer guarantees its WAL."""
        if self.wal_status in ("unreserved", "lost"):
            return True
        if self.safe_wal_bytes is None or not self.keep_bytes:
            return False
        return self.safe_wal_bytes < NEAR_LIMIT_SHARE * self.keep_bytes


@dataclass(frozen=True)
class Backlog:
    pending: int | None  # changes waiting to be claimed (None: not known, the wal source)
    oldest_age: float | None  # seconds, None when nothing waits (or not known)
    parked: Mapping[str, int]  # messages parked per sink
    slot: SlotState | None = None  # the wal source's slot


@dataclass(frozen=True)
class Applied:
    """A transactional sink's last change in a batch (applied, parked or dead-lettered: taken
    either way), and how many of the batch's changes it took."""

    sink: str
    order: tuple[int, int]  # ChangeEvent.order
    event_id: str
    changes: int


@dataclass(frozen=True)
class ParkedMessage:
    """A parked message as a drain sees it: ``age`` is seconds since its first failure."""

    id: int
    message: Message
    attempts: int
    age: float


class ParkedLot(ABC):
    """One sink's parked messages, for its drain, on a connection of the lot's own. Every
    method may raise ``connector.db.DatabaseError`` or a driver error; the drain then waits
    and tries again (``reset`` drops the connection first)."""

    @abstractmethod
    async def head(self, limit: int) -> list[ParkedMessage]:
        """The oldest ``limit`` parked messages, or none when this instance no longer holds
        the consumer lease (another one may be active: it must not publish)."""

    @abstractmethod
    async def settle(self, delivered: Sequence[int], failed: Sequence[tuple[int, str]],
                     dead: Sequence[tuple[int, str, int]]) -> None:
        """In one transaction: remove the delivered, count a failure for ``(id, error)``,
        move ``(id, error, attempts)`` to the dead letters."""

    @abstractmethod
    async def expire(self, max_age: float) -> list[tuple[int, str]]:
        """Move what was first parked more than ``max_age`` seconds ago to the dead letters;
        ``(route, error)`` of each."""

    @abstractmethod
    async def reset(self) -> None:
        """Drop the connection (after an error); the next call opens a new one."""

    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        """A transaction on the lot's connection, for a transactional sink's drain: what the
        sink writes there commits with ``head``'s locks and ``settle``, or not at all."""
        raise NotImplementedError(f"{type(self).__name__} has no transactions")


class Store(ABC):
    @abstractmethod
    async def record(self, ex: Executor, dead: Sequence[DeadLetter],
                     parked: Sequence[Parked]) -> None:
        """Write a batch's dead letters and parked messages, in order, on the batch's
        writer."""

    @abstractmethod
    async def parked_among(self, ex: Executor, sinks: Sequence[str]) -> set[str]:
        """Which of ``sinks`` have parked messages."""

    @abstractmethod
    async def has_parked(self, ex: Executor, sink: str) -> bool:
        """Whether ``sink`` has parked messages (asked inside the open batch)."""

    @abstractmethod
    async def discard_parked(self, ex: Executor, sink: str) -> int:
        """Delete ``sink``'s parked messages (a handler detached); how many there were."""

    @abstractmethod
    async def backlog(self, ex: Executor) -> Backlog:
        """What waits, for the gauges."""

    @abstractmethod
    async def applied(self, ex: Executor, sinks: Sequence[str]) -> dict[str, tuple[int, int]]:
        """The ``order`` of the last change each of ``sinks`` took, for those that took any."""

    @abstractmethod
    async def record_applied(self, ex: Executor, applied: Sequence[Applied]) -> None:
        """Record where transactional sinks stand, on the batch's writer."""

    @abstractmethod
    def lot(self, sink: str, lease: tuple[int, int]) -> ParkedLot:
        """``sink``'s parked messages, for as long as the consumer lease ``lease`` (server
        pid of the session holding it, its key) is held."""
