"""The values that flow through the pipeline: a captured change and a message to publish."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class ChangeEvent:
    """One captured row change. ``payload`` is the event's JSON text (DESIGN.md §5), built by
    the source; it is parsed only when a route needs a column value (``row``)."""

    position: int
    schema: str
    table: str
    op: str
    payload: bytes
    key: tuple[str, ...] = ()  # primary key columns of the table (empty: it has none)
    _parsed: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def data(self) -> dict[str, Any]:
        if self._parsed is None:
            self._parsed = orjson.loads(self.payload)
        return self._parsed

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def row(self) -> dict[str, Any] | None:
        """The row a channel template reads: the new row, or the old one for a delete."""
        data = self.data
        row = data["old"] if self.op == "delete" else data["new"]
        return row if isinstance(row, dict) else None


@dataclass(slots=True, frozen=True)
class Message:
    """What one publisher sends for one event on one channel."""

    publisher: str
    channel: str
    name: str
    payload: bytes
    event: ChangeEvent
