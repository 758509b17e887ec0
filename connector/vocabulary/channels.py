"""Channel names from templates: what a route's ``channel: users:{op}:{id}`` becomes for one
change. Pure; used by the router and by sinks that template names of their own (Ably)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from connector.vocabulary.events import ChangeEvent
from connector.vocabulary.names import ChannelTemplate

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
    if isinstance(value, int | float | Decimal):
        return str(value)
    return dumps(value).decode()


def render_channel(template: ChannelTemplate, event: ChangeEvent,
                   row: Any = None, op: str | None = None) -> str:
    """The template for ``event``: ``row`` (default: the event's) fills column fields and
    ``op`` (default: the event's) the ``{op}`` field, for a route that reshapes the event."""
    if template.columns and row is None and op is None:
        row = event.row
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
            out.append(op or event.op)
        elif not isinstance(row, dict):
            out.append(ALL_ROWS)
        else:
            out.append(render_value(row.get(name)))
    return "".join(out)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_exact_number)


def _exact_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot serialise {type(value).__name__}")
