"""What the capture triggers of one table can decide in the database.

A change is written to the outbox only if at least one route of its table would publish it:
the routes' filters and watched columns become each row trigger's ``WHEN`` clause (and
``UPDATE OF`` its column list), so a change nobody listens to costs a trigger condition, not a
function call and an outbox row. The router then decides per route in Python, by the same
rules (connector/router.py); both sides use connector/filters/, whose Python evaluation and
SQL agree (tests/integration/test_filters_sql.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from connector.binding import BoundRoute
from connector.filters.parse import columns
from connector.filters.sql import to_sql
from connector.vocabulary import quote_ident


@dataclass(frozen=True)
class RowTrigger:
    op: str  # insert | update | delete
    events: str  # INSERT, UPDATE [OF "a", "b"], DELETE
    when: str  # "" or WHEN (...)


def row_triggers(routes: Sequence[BoundRoute], ops: frozenset[str]) -> list[RowTrigger]:
    """The row triggers of one table, given its bound routes and the union of their ops."""
    out = []
    for op in ("insert", "update", "delete"):
        if op not in ops:
            continue
        listening = [b for b in routes if op in b.route.operations]
        conditions = [_condition(b, op) for b in listening]
        when = "" if not conditions or any(c is None for c in conditions) else (
            "WHEN (" + " OR ".join(f"({c})" for c in conditions if c) + ")")
        events = op.upper()
        if op == "update":
            watched = _update_columns(listening)
            if watched:
                events += " OF " + ", ".join(quote_ident(c) for c in sorted(watched))
        out.append(RowTrigger(op, events, when))
    return out


def _condition(b: BoundRoute, op: str) -> str | None:
    """SQL that is true exactly when route ``b`` publishes something for this row change;
    None when it publishes every change of ``op``."""
    types = b.info.types

    def matches(ref: str) -> str:  # may be NULL for "no": only under AND/OR, never NOT or <>
        assert b.where is not None
        return to_sql(b.where, ref, types, null_is_false=True)

    if op == "insert":
        return None if b.where is None else matches("NEW")
    if op == "delete":
        return None if b.where is None else matches("OLD")
    changed = None
    if b.watched is not None:
        cols = sorted(b.watched)
        old = ", ".join(_comparable(f"OLD.{quote_ident(c)}", types.get(c, "")) for c in cols)
        new = ", ".join(_comparable(f"NEW.{quote_ident(c)}", types.get(c, "")) for c in cols)
        changed = f"ROW({old}) IS DISTINCT FROM ROW({new})"
    if b.where is None:
        return changed
    if not b.route.transitions:
        return matches("NEW") if changed is None else f"({matches('NEW')}) AND {changed}"
    # leaving or entering the filtered set (<> needs both sides exactly true or false), or an
    # update inside it (of a watched column)
    inside = f"({matches('OLD')}) AND ({matches('NEW')})" + (
        "" if changed is None else f" AND {changed}")
    crossing = f"({to_sql(b.where, 'OLD', types)}) <> ({to_sql(b.where, 'NEW', types)})"
    return f"({crossing}) OR ({inside})"


def _update_columns(routes: Sequence[BoundRoute]) -> frozenset[str] | None:
    """``UPDATE OF`` columns: when every update route watches a column list, an update whose
    SET list names none of them (nor a filter column) cannot matter. Generated columns change
    without being named in SET, so a route watching one keeps the trigger on every update."""
    cols: set[str] = set()
    for b in routes:
        if b.watched is None or b.watched & b.info.generated:
            return None
        cols |= b.watched
        if b.where is not None:
            cols |= columns(b.where)
    return frozenset(cols) - frozenset().union(*(b.info.generated for b in routes))


# Types without an equality operator: compared the way the router sees them (json as jsonb,
# the geometric types and xml by their text).
_NO_EQUALITY = ("xml", "point", "line", "lseg", "box", "path", "polygon", "circle")


def _comparable(ref: str, type_name: str) -> str:
    base = type_name.removesuffix("[]")
    if base == "json":
        return f"{ref}::jsonb" if base == type_name else f"to_jsonb({ref})"
    if base in _NO_EQUALITY:
        return f"{ref}::text"
    return ref
