"""Row filters of routes: the language is described in connector/filters/types.py for now."""

from __future__ import annotations

from connector.filters.types import (
    ANY,
    LIST_OPERATORS,
    OPERATORS,
    ORDERING,
    CompactQuery,
    bind_types,
    columns,
    evaluate,
    parse_compact,
    parse_where,
    to_sql,
)
from connector.vocabulary import Condition, Filter

__all__ = [
    "ANY",
    "LIST_OPERATORS",
    "OPERATORS",
    "ORDERING",
    "CompactQuery",
    "Condition",
    "Filter",
    "bind_types",
    "columns",
    "evaluate",
    "parse_compact",
    "parse_where",
    "to_sql",
]
