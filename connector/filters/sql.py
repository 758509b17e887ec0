"""SQL compilation: :func:`to_sql` writes a bound filter as a SQL boolean expression over a
row (a trigger's ``NEW``/``OLD``) that is true exactly when evaluate() is, its values rendered
as typed literals."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from connector.filters.parse import LIST_OPERATORS, ORDERING
from connector.filters.types import _Type, _type, _uuid
from connector.vocabulary import Condition, Filter, quote_ident

_SQL_OPS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}

# Filter values are written into the SQL as literals, not bind parameters, because the SQL is
# a trigger's WHEN clause: CREATE TRIGGER takes no parameters, and the condition is stored with
# the trigger. That is safe because every literal is a bound value of a known Python type
# rendered by the code below: numbers, booleans, uuids and timestamps from their own canonical
# text (never the config's), text through _literal(), which doubles single quotes, uses E''
# with doubled backslashes when there are any (so standard_conforming_strings does not
# matter) and refuses NUL; each literal carries an explicit cast. Identifiers go through
# quote_ident(); `ref` must be a plain name (NEW, OLD, an alias).


def _literal(text: str) -> str:
    """A SQL string literal, as PostgreSQL's quote_literal() writes it."""
    if "\x00" in text:
        raise ValueError("a SQL literal cannot contain a NUL character")
    quoted = "'" + text.replace("'", "''") + "'"
    return "E" + quoted.replace("\\", "\\\\") if "\\" in text else quoted


def _float_text(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(x)


def _sql_value(t: _Type, value: Any) -> str:
    """One bound value as a typed SQL literal; ValueError for a value that is not bound."""
    kind = t.kind
    text: str | None = None
    if kind == "bool" and isinstance(value, bool):
        return "true" if value else "false"
    if ((kind == "int" and isinstance(value, int) and not isinstance(value, bool))
            or (kind == "numeric" and isinstance(value, Decimal) and not value.is_snan())):
        text = str(value)
    elif kind in ("float8", "float4") and isinstance(value, float):
        text = _float_text(value)
    elif kind in ("text", "bpchar", "enum") and isinstance(value, str):
        text = value
    elif kind == "uuid" and isinstance(value, str):
        text = value if _uuid(value) == value else None
    elif kind in ("timestamptz", "timestamp", "date") and value in ("infinity", "-infinity"):
        text = value
    elif kind in ("timestamptz", "timestamp") and isinstance(value, datetime):
        text = value.isoformat() if (value.tzinfo is not None) is (kind == "timestamptz") else None
    elif kind == "date" and isinstance(value, date) and not isinstance(value, datetime):
        text = value.isoformat()
    if text is None:
        raise ValueError(f"{value!r} is not a bound value of type {t.display} "
                         "(bind the filter with bind_types first)")
    return f"{_literal(text)}::{t.sql}"


def to_sql(f: Filter, ref: str, types: Mapping[str, str], *, null_is_false: bool = False,
           ) -> str:
    """A SQL boolean expression over the row ``ref`` (``NEW``, ``OLD`` or a table alias) that
    is true exactly when :func:`evaluate` is, and false otherwise (never NULL).

    ``null_is_false=True`` drops the ``coalesce(…, false)`` around each comparison, so the
    expression may be NULL where evaluate() is false: use it only where NULL counts as false
    (a trigger's WHEN, a WHERE clause, under AND/OR but never under NOT). That is exact because
    the expression has no NOT over a comparison: with AND and OR only, a NULL leaf read as
    false gives the same final truth as a NULL result read as false. It is also cheaper: a
    trigger's WHEN is rebuilt from its stored tree for every statement."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ref):
        raise ValueError(f"ref must be a plain name such as NEW or OLD, got {ref!r}")
    parts = [_condition_sql(c, ref, types, null_is_false) for c in f.conditions]
    if f.any_of:
        alternatives = [to_sql(sub, ref, types, null_is_false=null_is_false)
                        for sub in f.any_of]
        parts.append(alternatives[0] if len(alternatives) == 1 and not parts
                     else "(" + " OR ".join(f"({a})" for a in alternatives) + ")")
    return " AND ".join(parts) if parts else "true"


def _condition_sql(c: Condition, ref: str, types: Mapping[str, str], null_is_false: bool,
                   ) -> str:
    if c.column not in types:
        raise ValueError(f"column {c.column!r} has no type (bind the filter first)")
    t = _type(types[c.column])
    col = f"{ref}.{quote_ident(c.column)}"
    if c.op == "is_null":
        if not isinstance(c.value, bool):
            raise ValueError(f"is_null takes true or false, got {c.value!r}")
        if t.kind in ("json", "jsonb"):
            # to_jsonb renders a JSON null value and SQL NULL alike: test both.
            null = f"({col} IS NULL OR pg_catalog.{t.kind}_typeof({col}) = 'null')"
            return null if c.value else f"NOT {null}"
        if t.kind == "unknown":
            # possibly a composite type, where `x IS NULL` also holds for ROW(NULL, …),
            # which to_jsonb renders as an object: test the value itself.
            return f"pg_catalog.num_nulls({col}) = {1 if c.value else 0}"
        return f"{col} {'IS NULL' if c.value else 'IS NOT NULL'}"
    if not t.comparable:
        raise ValueError(f"column {c.column!r} ({t.display}) can only be tested with is_null")
    if c.op in ORDERING and not t.ordered:
        raise ValueError(f"operator {c.op!r} does not apply to {t.display}")
    if t.kind in ("text", "bpchar"):
        col = f'{col} COLLATE "C"'
    elif t.kind == "enum":
        col = f'{col}::text COLLATE "C"'
    if c.op in LIST_OPERATORS:
        if not isinstance(c.value, tuple | list) or not c.value:
            raise ValueError(f"{c.op} takes a non-empty list, got {c.value!r}")
        items = ", ".join(_sql_value(t, v) for v in c.value)
        test = f"{col} {'IN' if c.op == 'in' else 'NOT IN'} ({items})"
    elif c.op in _SQL_OPS:
        test = f"{col} {_SQL_OPS[c.op]} {_sql_value(t, c.value)}"
    else:
        raise ValueError(f"unknown operator {c.op!r}")
    # NULL column: false, as in evaluate()
    return test if null_is_false else f"coalesce({test}, false)"
