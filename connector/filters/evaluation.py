"""Evaluation: :func:`evaluate` decides on a row as the event carries it (``to_jsonb`` text
read with ``parse_float=Decimal``), by comparison keys that order values as PostgreSQL does."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from connector.filters.parse import LIST_OPERATORS
from connector.filters.types import _float4, _type
from connector.vocabulary import Condition, Filter


class _NotOfType(ValueError):
    """A row value that is not of its column's type (the table changed since binding)."""


def evaluate(f: Filter, row: Mapping[str, Any], types: Mapping[str, str]) -> bool:
    """Whether a row, as ``to_jsonb`` renders it (read with ``parse_float=Decimal``), passes
    the bound filter ``f``: exactly what :func:`to_sql` computes in PostgreSQL. A missing
    column reads as NULL; a value that is not of the column's type does not match."""
    for c in f.conditions:
        if not _test(c, row.get(c.column), types):
            return False
    return not f.any_of or any(evaluate(sub, row, types) for sub in f.any_of)


def _test(c: Condition, value: Any, types: Mapping[str, str]) -> bool:
    if c.op == "is_null":
        return (value is None) is c.value
    if value is None:
        return False  # SQL: a comparison with NULL is not true
    t = _type(types.get(c.column, ""))
    if not t.comparable:
        raise ValueError(f"column {c.column!r} ({t.display or 'no type'}) cannot be compared")
    try:
        key = _ROW_KEYS[t.kind](value)
        if c.op in LIST_OPERATORS:
            found = any(key == _BOUND_KEYS[t.kind](v) for v in c.value)
            return found if c.op == "in" else not found
        return _COMPARE[c.op](key, _BOUND_KEYS[t.kind](c.value))
    except _NotOfType:
        return False


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: bool(a == b), "neq": lambda a, b: bool(a != b),
    "lt": lambda a, b: bool(a < b), "lte": lambda a, b: bool(a <= b),
    "gt": lambda a, b: bool(a > b), "gte": lambda a, b: bool(a >= b)}

# Comparison keys. Numbers: (rank, value) with rank 0 for -Infinity, 1 finite, 2 Infinity,
# 3 NaN: PostgreSQL's numeric and float order, where NaN equals NaN and sorts above all.
_RANK = {"-Infinity": 0, "Infinity": 2, "NaN": 3}


def _int_key(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _NotOfType
    return v


def _numeric_key(v: Any) -> tuple[int, Any]:
    if isinstance(v, str) and v in _RANK:
        return _RANK[v], 0
    if isinstance(v, bool) or not isinstance(v, int | Decimal):
        raise _NotOfType
    if isinstance(v, Decimal) and not v.is_finite():
        return (3, 0) if v.is_nan() else (2 if v > 0 else 0, 0)
    return 1, v


def _float_key(convert: Callable[[Decimal], float]) -> Callable[[Any], tuple[int, Any]]:
    def key(v: Any) -> tuple[int, Any]:
        if isinstance(v, float):  # a bound value
            if math.isnan(v):
                return 3, 0
            return (1, v) if math.isfinite(v) else (2 if v > 0 else 0, 0)
        rank, d = _numeric_key(v)
        return (rank, convert(Decimal(d))) if rank == 1 else (rank, 0)
    return key


def _float4_row(d: Decimal) -> float:
    try:
        return _float4(d)
    except OverflowError:
        raise _NotOfType from None


def _str_key(v: Any) -> str:
    if not isinstance(v, str):
        raise _NotOfType
    return v


def _bpchar_key(v: Any) -> str:
    return _str_key(v).rstrip(" ")


def _bool_key(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _NotOfType
    return v


def _uuid_key(v: Any) -> str:
    return _str_key(v).lower()


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (astronomical year: 1 BC = 0)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


# to_jsonb's timestamps: 2026-01-02T03:04:05.123456+05:30, offsets may have seconds (local
# mean time before 1900), years may have more than 4 digits, BC is a suffix.
_PG_TIMESTAMP = re.compile(
    r"(\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
    r"(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?( BC)?")
_PG_DATE = re.compile(r"(\d{4,})-(\d\d)-(\d\d)( BC)?")
_INFINITY = {"-infinity": (0, 0), "infinity": (2, 0)}


def _pg_text(v: Any, pattern: re.Pattern[str]) -> re.Match[str] | tuple[int, int]:
    """to_jsonb's text of a date or timestamp: its match, or the sort key of ±infinity."""
    if not isinstance(v, str):
        raise _NotOfType
    if v in _INFINITY:
        return _INFINITY[v]
    m = pattern.fullmatch(v)
    if m is None:
        raise _NotOfType
    return m


def _year(digits: str, bc: str | None) -> int:
    return 1 - int(digits) if bc else int(digits)


def _timestamp_key(v: Any) -> tuple[int, int]:
    """(rank, microseconds since 1970-01-01 UTC, or local wall time read as UTC)."""
    if isinstance(v, datetime):  # a bound value
        us = (_days_from_civil(v.year, v.month, v.day) * 86400 + v.hour * 3600
              + v.minute * 60 + v.second) * 1_000_000 + v.microsecond
        offset = v.utcoffset()
        if offset is not None:
            us -= (offset.days * 86400 + offset.seconds) * 1_000_000 + offset.microseconds
        return 1, us
    m = _pg_text(v, _PG_TIMESTAMP)
    if isinstance(m, tuple):
        return m
    y, mo, d, h, mi, s, frac, sign, oh, om, os_, bc = m.groups()
    seconds = (_days_from_civil(_year(y, bc), int(mo), int(d)) * 86400 + int(h) * 3600
               + int(mi) * 60 + int(s))
    if sign:
        east = int(oh) * 3600 + int(om or 0) * 60 + int(os_ or 0)
        seconds -= east if sign == "+" else -east
    return 1, seconds * 1_000_000 + int((frac or "0").ljust(6, "0"))


def _date_key(v: Any) -> tuple[int, int]:
    if isinstance(v, date):  # a bound value
        return 1, _days_from_civil(v.year, v.month, v.day)
    m = _pg_text(v, _PG_DATE)
    if isinstance(m, tuple):
        return m
    y, mo, d, bc = m.groups()
    return 1, _days_from_civil(_year(y, bc), int(mo), int(d))


_ROW_KEYS: dict[str, Callable[[Any], Any]] = {
    "int": _int_key, "numeric": _numeric_key, "float8": _float_key(float),
    "float4": _float_key(_float4_row), "text": _str_key, "bpchar": _bpchar_key,
    "enum": _str_key, "bool": _bool_key, "uuid": _uuid_key, "timestamptz": _timestamp_key,
    "timestamp": _timestamp_key, "date": _date_key}
_BOUND_KEYS = _ROW_KEYS  # bound values are of the same shapes (or datetime/date/float)
