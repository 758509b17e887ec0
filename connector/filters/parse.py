"""The map form of a route's ``where:``: :func:`parse_where` checks its structure and keeps
the values as written (YAML scalars); :func:`columns` lists the columns a filter reads. Also the
operators and the reserved key ``any``, which every other module of the language shares. The
language itself is described in connector/filters/__init__.py."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from connector.vocabulary import Condition, Filter, join_path

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "not_in", "is_null")
ORDERING = frozenset({"lt", "lte", "gt", "gte"})
LIST_OPERATORS = frozenset({"in", "not_in"})
ANY = "any"  # the reserved key of the map form

_EXPECTED_OPERATORS = ", ".join(OPERATORS)


_SCALARS = (str, int, float, Decimal, date)  # bool is an int; datetime is a date


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def parse_where(raw: Any, path: str) -> tuple[Filter | None, list[str]]:
    """The filter of a route's ``where:`` mapping, values as written; or None and one
    ``key.path: message`` line per problem. ``path`` is the mapping's own path, e.g.
    ``routes[0].where``."""
    problems: list[str] = []
    result = _parse_map(raw, path, problems)
    return (None, problems) if problems else (result, [])


def _parse_map(raw: Any, path: str, problems: list[str]) -> Filter:
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: expected a mapping")
        return Filter()
    conditions: list[Condition] = []
    any_of: list[Filter] = []
    for key, spec in raw.items():
        if not isinstance(key, str):
            problems.append(f"{path}[{json.dumps(str(key))}]: expected a column name "
                            f"(a string), got {_kind_of(key)}")
            continue
        at = join_path(path, key)
        if key == ANY:
            if not isinstance(spec, list):
                problems.append(f"{at}: expected a list of mappings ('any' is reserved: "
                                "it ORs the mappings it lists)")
            elif not spec:
                problems.append(f"{at}: expected at least one mapping")
            else:
                for i, item in enumerate(spec):
                    if isinstance(item, Mapping) and not item:
                        problems.append(f"{at}[{i}]: expected at least one condition")
                    any_of.append(_parse_map(item, f"{at}[{i}]", problems))
            continue
        if isinstance(spec, Mapping):
            if not spec:
                problems.append(f"{at}: expected at least one operator "
                                f"({_EXPECTED_OPERATORS})")
            for op, value in spec.items():
                if op not in OPERATORS:
                    problems.append(f"{at}: unknown operator {str(op)!r} "
                                    f"(expected {_EXPECTED_OPERATORS})")
                    continue
                checked = _parse_value(op, value, f"{at}.{op}", problems)
                if checked is not None:
                    conditions.append(Condition(key, op, checked))
        elif isinstance(spec, list):
            problems.append(f"{at}: a list is not a value; for one of several values write "
                            "{in: [...]}")
        elif spec is None:
            problems.append(f"{at}: null is not a value; write {{is_null: true}}")
        elif isinstance(spec, _SCALARS):
            conditions.append(Condition(key, "eq", spec, shorthand=True))
        else:
            problems.append(f"{at}: expected a value or a mapping of operators, "
                            f"got {_kind_of(spec)}")
    return Filter(tuple(conditions), tuple(any_of))


def _parse_value(op: str, value: Any, at: str, problems: list[str]) -> Any:
    """The value of one operator, lists as tuples; None after reporting a problem."""
    if op == "is_null":
        if not isinstance(value, bool):
            problems.append(f"{at}: expected true or false")
            return None
        return value
    if op in LIST_OPERATORS:
        if not isinstance(value, list | tuple):
            problems.append(f"{at}: expected a list")
            return None
        if not value:
            problems.append(f"{at}: expected a non-empty list")
            return None
        ok = True
        for i, item in enumerate(value):
            ok = _check_scalar(item, f"{at}[{i}]", problems) and ok
        return tuple(value) if ok else None
    return value if _check_scalar(value, at, problems) else None


def _check_scalar(value: Any, at: str, problems: list[str]) -> bool:
    if value is None:
        problems.append(f"{at}: null is not a value; use is_null")
        return False
    if not isinstance(value, _SCALARS):
        problems.append(f"{at}: expected a single value, got {_kind_of(value)}")
        return False
    return True


def columns(f: Filter) -> frozenset[str]:
    """Every column the filter reads."""
    return frozenset(c.column for c in _all_conditions(f))


def _all_conditions(f: Filter) -> Iterator[Condition]:
    yield from f.conditions
    for sub in f.any_of:
        yield from _all_conditions(sub)
