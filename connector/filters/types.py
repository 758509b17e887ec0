"""Row filters of routes: parsed from the config, typed by the table's columns, evaluated in
Python and compiled to SQL. Pure: no I/O.

The model
---------
A :class:`Filter` is ``AND(conditions) AND (OR(any_of) if any_of else true)``; a
:class:`Condition` tests one column with one operator. In the config (a route's ``where:``)::

    where:
      status: active                 # shorthand for {eq: active}
      amount: {gte: 100, lt: 10000}  # several operators on a column: AND
      region: {in: [eu, us]}
      deleted_at: {is_null: true}
      any:                           # OR of maps, each map ANDed; may nest `any`
        - {kind: a}
        - {score: {lt: 0}, kind: b}

Operators: ``eq neq lt lte gt gte in not_in is_null``. The key ``any`` is reserved in this map
form: a column literally named ``any`` can only be filtered with the compact syntax, quoted
(``"any".eq.x``, see :func:`parse_compact`).

The life of a filter
--------------------
1. :func:`parse_where` checks the structure; values stay as written (YAML scalars).
2. :func:`bind_types` checks every column against the table and converts every value to its
   column's type (see *Types* below); a filter is only evaluated or compiled once bound.
3. :func:`evaluate` decides on a row as the event carries it: PostgreSQL's ``to_jsonb(row)``
   read with ``json.loads(text, parse_float=decimal.Decimal)``.
4. :func:`to_sql` writes the same decision as a SQL boolean expression over ``NEW``/``OLD``
   for a trigger's ``WHEN`` clause. Both always give the same answer on the same row
   (tests/integration/test_filters_sql.py checks it against a real server).

NULL semantics (as SQL)
-----------------------
Every comparison (``eq neq lt lte gt gte in not_in``) with a NULL column is *not satisfied*:
``{neq: x}`` and ``{not_in: [...]}`` do not match NULL (add ``any: [{col: {is_null: true}},
...]`` for that). ``is_null`` tests NULL. Values in a filter are never NULL (``{eq: null}`` and
``in: [a, null]`` are errors: write ``is_null``). So a filter is always exactly true or false:
in SQL each comparison is wrapped in ``coalesce(…, false)``, and ``NOT IN`` never sees a NULL.

Types (the ``types`` mapping of :func:`bind_types`, :func:`evaluate` and :func:`to_sql`)
---------------------------------------------------------------------------------------
``types`` maps each column name to its type as ``format_type(atttypid, atttypmod)`` writes it
(``integer``, ``numeric(12,2)``, ``character varying(20)``, ``timestamp(3) with time zone``,
``integer[]`` …), with two rules for the caller:

- a domain column is given as its *base* type (``format_type(typbasetype, typtypmod)``,
  resolved through domains over domains down to the first non-domain type);
- an enum column (or a domain over an enum) is given as ``enum:<type name>``, e.g.
  ``enum:mood``. Its labels are not checked: a value that is no label never matches.

Common aliases (``int4``, ``varchar``, ``timestamptz`` …) are accepted as well. What each type
allows, and how values are converted:

============================================  ==================  =========================
type                                          value               operators
============================================  ==================  =========================
smallint, integer, bigint                     int (in range)      all
numeric                                       Decimal (also NaN,  all
                                              ±Infinity)
real, double precision                        float (also NaN,    all
                                              ±Infinity)
text, character varying                       str                 all, byte order
character(n) (trailing blanks ignored)        str                 all, byte order
boolean                                       bool                eq neq in not_in is_null
enum:<name>                                   str                 eq neq in not_in is_null
uuid                                          str, canonical      all
timestamp with time zone                      aware datetime      all
timestamp without time zone                   naive datetime      all
date                                          date                all
json, jsonb, arrays, bytea, anything else     —                   is_null only
============================================  ==================  =========================

- Numbers: YAML numbers or numeric strings (``"5"``, ``"1e3"``, ``"NaN"``, ``"Infinity"``);
  never booleans. Integer columns take integral values only. ``real`` values are rounded to
  single precision as PostgreSQL does. NaN equals NaN and sorts above every number, as in
  PostgreSQL; ``-0`` equals ``0``.
- Timestamps: ISO 8601 strings (``2026-01-02T03:04:05.123456+02:00``, a space for ``T``,
  ``Z``, seconds and fraction optional, at most 6 fraction digits), YAML timestamps, or
  ``infinity`` / ``-infinity``. A ``timestamp with time zone`` value without an offset is
  taken as **UTC** (never the session's time zone); a ``timestamp without time zone`` value
  may not have one. A date alone means midnight. Years 1 to 9999.
- Text is compared in byte order (UTF-8 byte order is code-point order): the SQL adds
  ``COLLATE "C"``, whatever the column's collation. ``character(n)`` ignores trailing blanks on
  both sides, as PostgreSQL does. This assumes a UTF8 database.
- ``is_null`` on json/jsonb is also true for a JSON ``null`` value: the event renders both as
  ``null``, so the SQL tests both too.

The SQL side relies on ``to_jsonb`` writing floats exactly (PostgreSQL ≥ 12 with the default
``extra_float_digits = 1``; a writer's session that lowers it puts rounded floats into its
events, which the trigger, comparing exact values, did not see). A numeric ``Infinity`` value
needs PostgreSQL ≥ 14.
"""

from __future__ import annotations

import json
import math
import re
import struct
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any

from connector.vocabulary import OPERATIONS, Condition, Filter, parse_table, quote_ident

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "not_in", "is_null")
ORDERING = frozenset({"lt", "lte", "gt", "gte"})
LIST_OPERATORS = frozenset({"in", "not_in"})
ANY = "any"  # the reserved key of the map form

_EXPECTED_OPERATORS = ", ".join(OPERATORS)
_SQL_OPS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


# --------------------------------------------------------------------------- parsing


def _join(path: str, key: str) -> str:
    """``path.key``, or ``path["key"]`` for a key that is not a plain name (as config.py)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


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
        at = _join(path, key)
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


# --------------------------------------------------------------------------- types


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


# --------------------------------------------------------------------------- binding


class _Invalid(ValueError):
    """Values that do not fit their column; each argument is one problem line."""


def bind_types(f: Filter, types: Mapping[str, str], path: str, *,
               table: str = "<table>") -> tuple[Filter | None, list[str]]:
    """``f`` with every value converted to its column's type (see the module docstring for
    ``types``); or None and one ``key.path: message`` line per problem. ``path`` is the path
    the filter was parsed at (``routes[0].where``); ``table`` names the table in "unknown
    column" messages (``public.users``; the default leaves ``<table>`` to be replaced)."""
    problems: list[str] = []
    bound = _bind(f, types, path, table, problems)
    return (None, problems) if problems else (bound, [])


def _bind(f: Filter, types: Mapping[str, str], path: str, table: str,
          problems: list[str]) -> Filter:
    conditions = []
    unknown: set[str] = set()
    for c in f.conditions:
        at = _join(path, c.column)
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
    any_of = tuple(_bind(sub, types, f"{_join(path, ANY)}[{i}]", table, problems)
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


# --------------------------------------------------------------------------- evaluation


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


# --------------------------------------------------------------------------- SQL

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


# --------------------------------------------------------------------------- compact syntax


@dataclass(frozen=True)
class CompactQuery:
    """A subscription in the compact syntax: which operations of which table, which rows."""

    operations: frozenset[str]
    table: str  # schema.table as config.TableName prints it (parse_table reads it back)
    filter: Filter | None  # values as strings: bind with bind_types before use


def parse_compact(text: str) -> CompactQuery:
    """Parse ``<operations>:<table>[:<condition>[,<condition>...]]`` (conditions ANDed).

    ::

        query      = operations ":" table [ ":" condition { "," condition } ]
        operations = "*" | operation { "|" operation }
                     operation = insert | update | delete | truncate; "*" is all four
        table      = [ name "." ] name         as in the config: "public" when no schema;
                     a name in double quotes may hold any character ("" is a quote)
        condition  = column "." operator "." value
        column     = name | quoted             a bare column name is any text without
                                               . , : ( ) " ; "any" is reserved: write "any"
        operator   = eq | neq | lt | lte | gt | gte | in | not_in | is_null
        value      = quoted | bare             bare: everything up to the next "," (may hold
                                               "." and ":"), not empty, not starting with "
                                               or (; quoted: "…" with "" for a quote
                   | "(" item { "," item } ")" for in / not_in; an item is quoted or bare
                                               (bare: anything but , ) " and not empty)
                   | true | false              for is_null

    Examples: ``insert:users:id.eq.5``, ``*:orders:amount.gte.100``,
    ``update|delete:public.users:status.in.(active,pending),deleted_at.is_null.true``,
    ``delete:users`` (no filter), ``*:users:name.eq."Smith, John"``. Values stay strings
    (``is_null`` takes a bool): :func:`bind_types` converts them. Nothing is percent-decoded
    or trimmed. ValueError, with the position, for anything else.
    """
    p = _Scanner(text)
    operations = p.operations()
    p.expect(":", "after the operations")
    table = p.table()
    if p.done():
        return CompactQuery(operations, table, None)
    p.expect(":", "after the table")
    conditions = [p.condition()]
    while not p.done():
        p.expect(",", "between conditions")
        conditions.append(p.condition())
    return CompactQuery(operations, table, Filter(tuple(conditions)))


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def done(self) -> bool:
        return self.i >= len(self.text)

    def error(self, message: str, at: int | None = None) -> ValueError:
        at = self.i if at is None else at
        return ValueError(f"{message} at position {at} of {self.text!r}")

    def expect(self, char: str, where: str) -> None:
        if self.text.startswith(char, self.i):
            self.i += 1
            return
        found = repr(self.text[self.i]) if not self.done() else "the end"
        raise self.error(f"expected {char!r} {where}, found {found}")

    def until(self, stops: str) -> str:
        start = self.i
        while not self.done() and self.text[self.i] not in stops:
            self.i += 1
        return self.text[start:self.i]

    def quoted(self) -> str:
        start = self.i
        self.i += 1  # the opening quote
        out = []
        while True:
            if self.done():
                raise self.error("unterminated double quote", start)
            ch = self.text[self.i]
            if ch == '"':
                if self.text.startswith('""', self.i):
                    out.append('"')
                    self.i += 2
                    continue
                self.i += 1
                return "".join(out)
            out.append(ch)
            self.i += 1

    def operations(self) -> frozenset[str]:
        start = self.i
        words = self.until(":").split("|")
        if words == ["*"]:
            return frozenset(OPERATIONS)
        for word in words:
            if word not in OPERATIONS:
                raise self.error(f"unknown operation {word!r} (expected "
                                 f"{', '.join(OPERATIONS)} joined by '|', or *)", start)
        return frozenset(words)

    def table(self) -> str:
        start = self.i
        while not self.done() and self.text[self.i] != ":":
            if self.text[self.i] == '"':
                self.quoted()
            else:
                self.i += 1
        try:
            return str(parse_table(self.text[start:self.i]))
        except ValueError as exc:
            raise self.error(f"invalid table: {exc}", start) from None

    def condition(self) -> Condition:
        start = self.i
        if self.text.startswith('"', self.i):
            column = self.quoted()
        else:
            column = self.until('.,:()"')
            if not column:
                raise self.error("expected a column name")
            if column == ANY:
                raise self.error("'any' is reserved: quote a column named any (\"any\")",
                                 start)
        self.expect(".", f"after the column {column!r}")
        op_at = self.i
        op = self.until(".,")
        if op not in OPERATORS:
            raise self.error(f"unknown operator {op!r} (expected {_EXPECTED_OPERATORS})",
                             op_at)
        self.expect(".", f"after the operator {op!r}")
        value_at = self.i
        if op == "is_null":
            word = self.until(",")
            if word not in ("true", "false"):
                raise self.error(f"is_null takes true or false, got {word!r}", value_at)
            return Condition(column, op, word == "true")
        if op in LIST_OPERATORS:
            if not self.text.startswith("(", self.i):
                raise self.error(f"{op} takes a list: ({op}.(a,b,c))")
            self.i += 1
            items = [self.item(")")]
            while self.text.startswith(",", self.i):
                self.i += 1
                items.append(self.item(")"))
            self.expect(")", "to close the list")
            return Condition(column, op, tuple(items))
        if self.text.startswith("(", self.i):
            raise self.error(f"{op} takes a single value; a list is for in and not_in")
        return Condition(column, op, self.item(""))

    def item(self, closer: str) -> str:
        if self.text.startswith('"', self.i):
            return self.quoted()
        start = self.i
        value = self.until("," + closer + '"')
        if not self.done() and self.text[self.i] == '"':
            raise self.error('a double quote may only start a quoted value ("…")')
        if not value:
            raise self.error('expected a value (write "" for an empty string)', start)
        return value
