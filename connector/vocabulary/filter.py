"""The row filter model: what a route's ``where:`` becomes once parsed.

Only the data; parsing, typing, evaluation and SQL compilation live in connector/filters/.
It sits in the vocabulary because a route (connector/vocabulary/config.py) carries one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Condition:
    """``column <op> value``. ``value`` is a tuple for ``in``/``not_in`` and a bool for
    ``is_null``; raw (as written) until connector/filters binds it to the column's type."""

    column: str
    op: str
    value: Any
    # written as `column: value` (for error paths only: not part of equality)
    shorthand: bool = field(default=False, compare=False, repr=False)


@dataclass(frozen=True)
class Filter:
    """``AND(conditions) AND (OR(any_of) if any_of else true)``; empty: every row."""

    conditions: tuple[Condition, ...] = ()
    any_of: tuple[Filter, ...] = ()
