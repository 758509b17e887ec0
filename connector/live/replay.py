"""The replay buffer: the newest events the live sink took, bounded by count and age, so a
client that reconnects with the last id it saw gets what it missed, without gap or
duplicate, or learns that it must refetch (``None``)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Entry:
    """One event as the live sink keeps it; ``data`` is parsed once, for every client."""

    seq: int
    id: str
    schema: str
    table: str
    op: str
    data: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class ReplayBuffer:
    def __init__(self, max_events: int, max_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_events = max_events
        self.max_seconds = max_seconds
        self.clock = clock
        self._entries: collections.deque[Entry] = collections.deque()
        self._seq_of: dict[str, int] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, id: str, schema: str, table: str, op: str, data: dict[str, Any]) -> Entry:
        entry = Entry(self._next, id, schema, table, op, data, self.clock())
        self._next += 1
        if self.max_events > 0:
            self._entries.append(entry)
            self._seq_of[id] = entry.seq
        self._trim()
        return entry

    def _trim(self) -> None:
        oldest = self.clock() - self.max_seconds
        while self._entries and (len(self._entries) > self.max_events
                                 or self._entries[0].at < oldest):
            gone = self._entries.popleft()
            if self._seq_of.get(gone.id) == gone.seq:
                del self._seq_of[gone.id]

    def after(self, id: str) -> list[Entry] | None:
        """The entries after the one with ``id``, oldest first; None when ``id`` is not in the
        buffer (older than it, or never seen): the client must resynchronise."""
        self._trim()
        seq = self._seq_of.get(id)
        if seq is None:
            return None
        first = self._entries[0].seq
        return list(self._entries)[seq - first + 1:]
