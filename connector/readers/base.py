"""The Reader contract: where change events come from, in order, each batch acknowledged
only once its outcome is durable.

When the engine (connector/pipeline.py) calls what:

1. ``open()`` after the consumer's session connected (and again after every reconnect):
   reset what was known of the old connection.
2. ``read_batch()`` in a loop. It returns the next :class:`Batch`, in source order; an empty
   batch now and then while idle (no events, nothing to acknowledge: the engine looks after
   other things between batches); ``None`` when there is nothing more: a finite reader is
   done, or ``interrupt()`` was called. It raises :class:`ReaderDisconnected` when its
   session is lost (the engine reconnects and opens it again).
3. For each non-empty batch, exactly one of:
   - ``ack(batch)``: its outcome is durable; it must never be read again. Whatever had to be
     recorded with it (dead letters, parked messages, a transactional sink's writes) was
     written on ``writer(batch)`` first.
   - ``nack(batch)``: not delivered; the same events come again, in the same order.
   Batches are acknowledged in the order they were read.
4. ``close()`` when stopping: a batch read and neither acked nor nacked is given back.

``writer(batch)`` is an async context manager yielding the :class:`Executor` on which writes
that belong to the batch go: for the trigger reader the claim transaction itself (atomic
with ``ack``), for the wal reader a transaction committed before the slot moves.

The shapes this fits:

- Polling readers (trigger, wal through SQL) claim in ``read_batch``; their polling and doze
  machinery is shared (connector/readers/polling.py), not part of the contract.
- A push-based reader (a replication stream) reads into a bounded buffer from a task of its
  own and hands batches out in ``read_batch``; ``ack`` records the position it may confirm,
  which its status task sends; ``nack`` restarts the stream from the last confirmed position.
- A finite reader (a backfill of existing rows) returns ``None`` from ``read_batch`` once
  every row was read; its ``ack`` moves its cursor (a key range) past the batch.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from connector.store.base import Executor
from connector.vocabulary import ChangeEvent, ConnectionLost


class ReaderDisconnected(ConnectionLost):
    """The reader lost its database session (and with it, the consumer lease)."""


@dataclass
class Batch:
    events: Sequence[ChangeEvent]
    token: object = field(default=None, repr=False)  # the reader's own bookkeeping


class Reader(ABC):
    #: set once the session is lost or stops answering: whoever publishes for this reader
    #: must stop at once, another instance may take over
    lost: asyncio.Event
    #: ``writer(batch)`` commits with ``ack`` (the trigger reader's claim transaction), so a
    #: transactional sink's writes happen exactly once by themselves. False (wal): the writer
    #: commits before ``ack``, so the engine also records on it the last change each
    #: transactional sink took, and skips changes at or before it (ChangeEvent.order).
    atomic_writer: bool = True

    @abstractmethod
    async def open(self) -> None:
        """Start reading on a (re)connected session."""

    @abstractmethod
    async def read_batch(self) -> Batch | None:
        """The next batch in order, an empty batch while idle, or ``None`` when done."""

    @abstractmethod
    def writer(self, batch: Batch) -> AbstractAsyncContextManager[Executor]:
        """Where writes that must be durable with ``batch`` go, before ``ack(batch)``."""

    @abstractmethod
    async def ack(self, batch: Batch) -> None:
        """The batch's outcome is durable: never deliver it again."""

    @abstractmethod
    async def nack(self, batch: Batch) -> None:
        """The batch was not delivered: deliver it again, in the same order."""

    @abstractmethod
    def interrupt(self) -> None:
        """Make a waiting ``read_batch`` return ``None`` promptly (used to stop)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop reading; a batch neither acked nor nacked is given back."""

    def lag_seconds(self) -> float | None:
        """How far behind the source this reader is, in seconds, when it measures it (the
        wal reader's heartbeats); read by the engine for its gauges."""
        return None
