"""Binding: :func:`bind_types` checks every column of a parsed filter against the table and
converts every value to its column's type (connector/filters/types.py), reporting each problem
at its config path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.filters.parse import (
    _EXPECTED_OPERATORS,
    ANY,
    LIST_OPERATORS,
    OPERATORS,
    ORDERING,
)
from connector.filters.types import _convert, _Invalid, _Type, _type
from connector.vocabulary import Condition, Filter, join_path


def bind_types(f: Filter, types: Mapping[str, str], path: str, *,
               table: str = "<table>") -> tuple[Filter | None, list[str]]:
    """``f`` with every value converted to its column's type (see *Types* in
    connector/filters/__init__.py for ``types``); or None and one ``key.path: message`` line
    per problem. ``path`` is the path the filter was parsed at (``routes[0].where``); ``table``
    names the table in "unknown column" messages (``public.users``; the default leaves
    ``<table>`` to be replaced)."""
    problems: list[str] = []
    bound = _bind(f, types, path, table, problems)
    return (None, problems) if problems else (bound, [])


def _bind(f: Filter, types: Mapping[str, str], path: str, table: str,
          problems: list[str]) -> Filter:
    conditions = []
    unknown: set[str] = set()
    for c in f.conditions:
        at = join_path(path, c.column)
        type_name = types.get(c.column)
        if type_name is None:
            if c.column not in unknown:
                unknown.add(c.column)
                problems.append(f"{at}: unknown column {c.column!r} in {table}")
            continue
        at_op = at if c.shorthand else f"{at}.{c.op}"
        try:
            conditions.append(Condition(c.column, c.op, _bind_value(c, _type(type_name), at_op),
                                        shorthand=c.shorthand))
        except _Invalid as exc:
            problems += exc.args
    any_of = tuple(_bind(sub, types, f"{join_path(path, ANY)}[{i}]", table, problems)
                   for i, sub in enumerate(f.any_of))
    return Filter(tuple(conditions), any_of)


def _bind_value(c: Condition, t: _Type, at: str) -> Any:
    col = f"column {c.column} ({t.display})"
    if c.op not in OPERATORS:
        raise _Invalid(f"{at}: unknown operator {c.op!r} (expected {_EXPECTED_OPERATORS})")
    if c.op == "is_null":
        if not isinstance(c.value, bool):
            raise _Invalid(f"{at}: expected true or false")
        return c.value
    if not t.comparable:
        raise _Invalid(f"{at}: {col} can only be tested with is_null")
    if c.op in ORDERING and not t.ordered:
        why = "enums are not ordered by filters" if t.kind == "enum" else "it is not ordered"
        raise _Invalid(f"{at}: operator {c.op!r} does not apply to {col}: {why}; "
                       "use eq, neq, in, not_in or is_null")
    if c.op in LIST_OPERATORS:
        if not isinstance(c.value, list | tuple) or not c.value:
            raise _Invalid(f"{at}: expected a non-empty list")
        items: list[Any] = []
        errors: list[str] = []
        for i, v in enumerate(c.value):
            try:
                items.append(_convert(t, v, col, f"{at}[{i}]"))
            except _Invalid as exc:
                errors += exc.args
        if errors:
            raise _Invalid(*errors)
        return tuple(items)
    return _convert(t, c.value, col, at)
