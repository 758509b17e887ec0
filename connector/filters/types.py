"""The column types of the filter language: the type table (:class:`_Type`, read by
:func:`_type` from ``format_type`` text) and the conversion of a filter's values to their
column's type (:func:`_convert`), with PostgreSQL's rules for numbers, text, uuids and
timestamps. What each type allows is the *Types* table of connector/filters/__init__.py."""

from __future__ import annotations

import math
import re
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any

from connector.filters.parse import _kind_of


@dataclass(frozen=True)
class _Type:
    kind: str  # int numeric float8 float4 text bpchar bool enum uuid timestamptz timestamp
    #            date json jsonb opaque (IS NULL only) unknown (maybe composite: num_nulls)
    name: str  # as the caller gave it, for messages
    sql: str = ""  # the type of literals in SQL
    low: int = 0  # integer range
    high: int = 0

    @property
    def comparable(self) -> bool:
        return self.kind not in ("json", "jsonb", "opaque", "unknown")

    @property
    def ordered(self) -> bool:
        return self.comparable and self.kind not in ("bool", "enum")

    @property
    def display(self) -> str:
        return self.name.removeprefix("enum:") if self.kind == "enum" else self.name


_INTS = {"smallint": 16, "int2": 16, "integer": 32, "int": 32, "int4": 32, "bigint": 64,
         "int8": 64}
_SQL_INT = {16: "smallint", 32: "integer", 64: "bigint"}
_KINDS = {
    "numeric": ("numeric", "numeric"), "decimal": ("numeric", "numeric"),
    "double precision": ("float8", "double precision"), "float8": ("float8", "double precision"),
    "float": ("float8", "double precision"),
    "real": ("float4", "real"), "float4": ("float4", "real"),
    "text": ("text", "text"), "character varying": ("text", "text"),
    "varchar": ("text", "text"),
    "character": ("bpchar", "bpchar"), "char": ("bpchar", "bpchar"),
    "bpchar": ("bpchar", "bpchar"),
    "boolean": ("bool", "boolean"), "bool": ("bool", "boolean"),
    "uuid": ("uuid", "uuid"),
    "timestamp with time zone": ("timestamptz", "timestamp with time zone"),
    "timestamptz": ("timestamptz", "timestamp with time zone"),
    "timestamp without time zone": ("timestamp", "timestamp without time zone"),
    "timestamp": ("timestamp", "timestamp without time zone"),
    "date": ("date", "date"),
    "json": ("json", ""), "jsonb": ("jsonb", ""),
}
# Built-in types that are never composite: IS NULL is exact for them.
_OPAQUE = frozenset({
    "bytea", "time without time zone", "time", "time with time zone", "timetz", "interval",
    "money", "inet", "cidr", "macaddr", "macaddr8", "xml", "bit", "bit varying", "varbit",
    "tsvector", "tsquery", "oid", "name", '"char"', "point", "line", "lseg", "box", "path",
    "polygon", "circle", "pg_lsn", "int4range", "int8range", "numrange", "tsrange",
    "tstzrange", "daterange", "jsonpath", "xid", "xid8", "regclass", "regtype"})
_TYPMOD = re.compile(r"\(\s*-?\d+\s*(?:,\s*-?\d+\s*)?\)")


@lru_cache(maxsize=512)
def _type(name: str) -> _Type:
    if name.startswith("enum:"):
        return _Type("enum", name, "text")
    if name.rstrip().endswith("]"):  # integer[], text[][], integer[3]
        return _Type("opaque", name)
    base = " ".join(_TYPMOD.sub(" ", name).split()).lower()
    if base in _INTS:
        bits = _INTS[base]
        return _Type("int", name, _SQL_INT[bits], -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if base in _KINDS:
        kind, sql = _KINDS[base]
        return _Type(kind, name, sql)
    if base in _OPAQUE:
        return _Type("opaque", name)
    return _Type("unknown", name)


class _Invalid(ValueError):
    """Values that do not fit their column; each argument is one problem line."""


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float | Decimal | int):
        return str(value)
    return _kind_of(value)


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SPECIAL = {"nan": "NaN", "infinity": "Infinity", "+infinity": "Infinity",
            "-infinity": "-Infinity", "inf": "Infinity", "+inf": "Infinity",
            "-inf": "-Infinity"}


def _decimal(value: Any) -> Decimal | None:
    """A number or numeric text as an exact Decimal (NaN and ±Infinity included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        d = Decimal(value)
        return None if d.is_snan() else d
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else Decimal(value)
    if isinstance(value, str):
        if _NUMBER.fullmatch(value):
            return Decimal(value)
        special = _SPECIAL.get(value.lower())
        if special:
            return Decimal(special)
    return None


def _convert(t: _Type, value: Any, col: str, at: str) -> Any:
    kind = t.kind
    if kind == "int":
        d = _decimal(value)
        if d is None or not d.is_finite() or d != d.to_integral_value():
            raise _Invalid(f"{at}: expected an integer for {col}, got {_show(value)}")
        if not t.low <= d <= t.high:
            raise _Invalid(f"{at}: expected an integer from {t.low} to {t.high} for {col}, "
                           f"got {_show(value)}")
        return int(d)
    if kind in ("numeric", "float8", "float4"):
        d = _decimal(value)
        if d is None:
            raise _Invalid(f"{at}: expected a number for {col}, got {_show(value)}")
        try:
            if kind == "numeric":
                exponent = d.as_tuple().exponent
                if isinstance(exponent, int) and (d.adjusted() > 131071 or exponent < -16383):
                    raise OverflowError  # beyond what numeric holds
                return d
            return _float8(d) if kind == "float8" else _float4(d)
        except OverflowError:
            raise _Invalid(f"{at}: {_show(value)} is out of range for {col}") from None
    if kind in ("text", "bpchar", "enum"):
        if not isinstance(value, str):
            raise _Invalid(f"{at}: expected a string for {col}, got {_show(value)} "
                           "(quote it in YAML)")
        _check_text(value, f"{at}: ")
        return value
    if kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise _Invalid(f"{at}: expected true or false for {col}, got {_show(value)}")
        return value
    if kind == "uuid":
        canonical = _uuid(value)
        if canonical is None:
            raise _Invalid(f"{at}: expected a uuid for {col}, got {_show(value)}")
        return canonical
    if kind in ("timestamptz", "timestamp"):
        moment = _timestamp(value, aware=kind == "timestamptz")
        if moment is None:
            example = ("2026-01-02T03:04:05+00:00 (without an offset: UTC)"
                       if kind == "timestamptz" else "2026-01-02T03:04:05, without an offset")
            raise _Invalid(f"{at}: expected a timestamp like {example} or infinity for {col}, "
                           f"got {_show(value)}")
        return moment
    if kind == "date":
        day = _date(value)
        if day is None:
            raise _Invalid(f"{at}: expected a date like 2026-01-02 or infinity for {col}, "
                           f"got {_show(value)}")
        return day
    raise _Invalid(f"{at}: {col} can only be tested with is_null")  # pragma: no cover


def _check_text(value: str, prefix: str) -> None:
    if "\x00" in value:
        raise _Invalid(f"{prefix}a value may not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(f"{prefix}a value must be valid Unicode (no lone surrogates)") from None


def _float8(d: Decimal) -> float:
    """``d`` as PostgreSQL's float8in reads its text: nearest double; OverflowError where
    PostgreSQL reports "out of range" (beyond the largest double, or a non-zero value that
    rounds to zero)."""
    x = float(d)
    if d.is_finite() and (math.isinf(x) or (x == 0 and d != 0)):
        raise OverflowError
    return x


# The smallest magnitude that rounds to infinity in single precision: FLT_MAX + half an ulp.
_FLOAT4_OVERFLOW = Decimal(2**128 - 2**103)
_FLOAT4_MAX = float(2**128 - 2**104)


def _float4_from_key(k: int) -> float:
    bits = k if k >= 0 else (-k) | 0x80000000
    value: float = struct.unpack("<f", struct.pack("<I", bits))[0]
    return value


def _float4_key(x: float) -> int:
    """``x`` rounded to single precision, its bits as an integer in the order of the values
    (the largest finite value where that rounding overflows)."""
    try:
        packed = struct.pack("<f", x)
    except OverflowError:
        packed = struct.pack("<f", math.copysign(_FLOAT4_MAX, x))
    bits: int = struct.unpack("<I", packed)[0]
    return bits if bits < 0x80000000 else -(bits & 0x7FFFFFFF)


def _float4(d: Decimal) -> float:
    """``d`` rounded to the nearest single-precision value (ties to even), as strtof() and so
    PostgreSQL's float4in do: rounding through a double could round twice. OverflowError
    where PostgreSQL reports "out of range"."""
    if not d.is_finite():
        return float(d)
    if abs(d) >= _FLOAT4_OVERFLOW:
        raise OverflowError
    k = _float4_key(float(d))  # within one single-precision step of the answer
    best: tuple[Decimal, int, float] | None = None
    for cand in (k - 1, k, k + 1):
        x = _float4_from_key(cand)
        if not math.isfinite(x):
            continue
        rank = (abs(Decimal(x) - d), abs(cand) & 1, x)  # nearest; on a tie the even one
        if best is None or rank[:2] < best[:2]:
            best = rank
    assert best is not None
    if best[2] == 0 and d != 0:
        raise OverflowError  # underflow
    return best[2]


_UUID = re.compile(r"\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{12}\}?")


def _uuid(value: Any) -> str | None:
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        return None
    if value.startswith("{") != value.endswith("}"):
        return None
    return str(uuid.UUID(value.strip("{}")))


_ISO = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)"
    r"(?:[T ](?P<h>\d\d):(?P<mi>\d\d)(?::(?P<s>\d\d)(?:\.(?P<f>\d{1,6}))?)?"
    r"(?:(?P<z>Z)|(?P<sign>[+-])(?P<oh>\d\d)(?::?(?P<om>\d\d)(?::(?P<os>\d\d))?)?)?)?")


_MAX_OFFSET = timedelta(hours=15, minutes=59, seconds=59)  # PostgreSQL's limit


def _timestamp(value: Any, aware: bool) -> datetime | str | None:
    """A bound timestamp: a datetime (aware, for timestamptz, keeping its offset; naive
    otherwise) or ``"infinity"`` / ``"-infinity"``; None when not one."""
    if isinstance(value, str):
        if value.lower() in ("infinity", "-infinity", "+infinity"):
            return value.lower().lstrip("+")
        m = _ISO.fullmatch(value)
        if m is None:
            return None
        try:
            tz = None
            if m["z"]:
                tz = UTC
            elif m["sign"]:
                east = timedelta(hours=int(m["oh"]), minutes=int(m["om"] or 0),
                                 seconds=int(m["os"] or 0))
                tz = timezone(-east if m["sign"] == "-" else east)
            value = datetime(int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"] or 0),
                             int(m["mi"] or 0), int(m["s"] or 0),
                             int((m["f"] or "0").ljust(6, "0")), tzinfo=tz)
        except ValueError:
            return None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        return None
    offset = value.utcoffset()
    if value.tzinfo is not None and (offset is None or offset.microseconds
                                     or abs(offset) > _MAX_OFFSET):
        return None
    if aware:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return value if value.tzinfo is None else None


def _date(value: Any) -> date | str | None:
    if isinstance(value, str):
        if value.lower() in ("infinity", "-infinity", "+infinity"):
            return value.lower().lstrip("+")
        if not re.fullmatch(r"\d{4}-\d\d-\d\d", value):
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    return None
