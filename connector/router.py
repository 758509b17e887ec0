"""Routing: pure, synchronous, no I/O. Events in, messages out, in event order.

A plain route (no filter, no column selection, no key split, no types) passes the event's JSON
text through untouched. The others read the rows with exact numbers (``Decimal``), decide, and
write a new payload when it differs from the captured one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from connector.binding import BoundRoute
from connector.filters.evaluation import evaluate
from connector.vocabulary import ChangeEvent, Config, Message, Route
from connector.vocabulary.channels import dumps, render_channel, render_value

__all__ = ["Router", "dumps", "render_channel", "render_value"]

class Router:
    """Routes events to messages. Routes other than plain ones need binding to their tables
    (connector.binding) first: their filters compare typed values."""

    def __init__(self, config: Config, bound: Sequence[BoundRoute] = ()) -> None:
        by_index = {b.route.index: b for b in bound}
        self._routes: dict[tuple[str, str], list[tuple[Route, BoundRoute | None]]] = (
            defaultdict(list))
        for route in config.routes:
            b = by_index.get(route.index)
            if b is None and not route.plain:
                raise ValueError(f"{route.at} needs binding to its table first")
            self._routes[(route.table.schema, route.table.name)].append((route, b))
        # Channels without column fields are the same for every event of a (table, op):
        # render them once instead of once per event.
        self._static: dict[tuple[int, str], str] = {}

    def route(self, events: Iterable[ChangeEvent]) -> list[Message]:
        messages: list[Message] = []
        for event in events:
            for route, bound in self._routes.get((event.schema, event.table), ()):
                if event.op not in route.operations:
                    continue
                if bound is None or route.plain:
                    messages.append(Message(route.publisher, self._channel(route, event),
                                            event.op, event.payload, event,
                                            route=route.index))
                else:
                    messages += self._shaped(route, bound, event)
        return messages

    def _channel(self, route: Route, event: ChangeEvent) -> str:
        if route.channel.columns:
            return render_channel(route.channel, event)
        key = (route.index, event.op)
        channel = self._static.get(key)
        if channel is None:
            channel = self._static[key] = render_channel(route.channel, event)
        return channel

    def _shaped(self, route: Route, b: BoundRoute, event: ChangeEvent) -> list[Message]:
        """A filtered / projected / split route: zero, one or two messages for the event."""
        data = event.exact
        new, old = data.get("new"), data.get("old")
        op = event.op
        if b.where is not None and op != "truncate":
            types = b.info.types
            new_ok = isinstance(new, dict) and evaluate(b.where, new, types)
            old_ok = isinstance(old, dict) and evaluate(b.where, old, types)
            if (op == "insert" and not new_ok) or (op == "delete" and not old_ok):
                return []
            if op == "update":
                if route.transitions:
                    if old_ok and not new_ok:
                        op = "delete"  # the row left the filtered set
                    elif new_ok and not old_ok:
                        op = "insert"  # the row entered it
                    elif not new_ok:
                        return []
                elif not new_ok:
                    return []
        if op == "update" and b.watched is not None and isinstance(old, dict) and isinstance(
                new, dict) and all(old.get(c) == new.get(c) for c in b.watched):
            return []  # only columns nobody watches changed
        if op == "update" and route.split_key_change and b.info.key and isinstance(
                old, dict) and isinstance(new, dict) and any(
                old.get(c) != new.get(c) for c in b.info.key):
            return [self._message(route, b, event, data, "delete", suffix="/delete"),
                    self._message(route, b, event, data, "insert", suffix="/insert")]
        return [self._message(route, b, event, data, op)]

    def _message(self, route: Route, b: BoundRoute, event: ChangeEvent, data: dict[str, Any],
                 op: str, suffix: str = "") -> Message:
        new, old = data.get("new"), data.get("old")
        if op == "insert" and event.op == "update":
            old = None
        elif op == "delete" and event.op == "update":
            new = None
        if b.keep is not None:
            new = {k: v for k, v in new.items() if k in b.keep} if isinstance(new, dict) else new
            old = {k: v for k, v in old.items() if k in b.keep} if isinstance(old, dict) else old
        out: dict[str, Any] = {"id": data["id"] + suffix, "op": op, "schema": data["schema"],
                               "table": data["table"], "new": new, "old": old}
        if op == "update" and isinstance(new, dict) and isinstance(old, dict):
            out["changes"] = {k: {"old": old.get(k), "new": v} for k, v in new.items()
                              if old.get(k) != v or k not in old}
        for k, v in data.items():
            if k not in out and k != "changes":
                out[k] = v  # txid, commit_time, lsn …
        if route.include_types:
            out["columns"] = {c: b.info.declared[c] for c in b.info.columns
                              if b.keep is None or c in b.keep}
        channel = render_channel(route.channel, event, old if op == "delete" else new, op)
        payload = event.payload if out == data else dumps(out)
        return Message(route.publisher, channel, op, payload, event, out["id"], route.index)
