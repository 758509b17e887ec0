"""Routing: pure, synchronous, no I/O. Events in, messages out, in event order."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from connector.config import ChannelTemplate, Config, Route
from connector.events import ChangeEvent, Message

# A truncate has no row: column placeholders of a per-row channel render as this.
ALL_ROWS = "*"


def render_value(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    import orjson

    return orjson.dumps(value).decode()


def render_channel(template: ChannelTemplate, event: ChangeEvent) -> str:
    row = event.row if template.columns else None
    out = []
    for literal, name in template.parts:
        out.append(literal)
        if name is None:
            continue
        if name == "schema":
            out.append(event.schema)
        elif name == "table":
            out.append(event.table)
        elif name == "op":
            out.append(event.op)
        elif row is None:
            out.append(ALL_ROWS)
        else:
            out.append(render_value(row.get(name)))
    return "".join(out)


class Router:
    def __init__(self, config: Config) -> None:
        self._routes: dict[tuple[str, str], list[Route]] = defaultdict(list)
        for route in config.routes:
            self._routes[(route.table.schema, route.table.name)].append(route)
        # Channels without column fields are the same for every event of a (table, op):
        # render them once per batch instead of once per event.
        self._static: dict[tuple[int, str], str] = {}

    def route(self, events: Iterable[ChangeEvent]) -> list[Message]:
        messages = []
        for event in events:
            for route in self._routes.get((event.schema, event.table), ()):
                if event.op not in route.operations:
                    continue
                if route.channel.columns:
                    channel = render_channel(route.channel, event)
                else:
                    key = (route.index, event.op)
                    channel = self._static.get(key) or self._static.setdefault(
                        key, render_channel(route.channel, event))
                messages.append(Message(route.publisher, channel, event.op, event.payload, event))
        return messages
