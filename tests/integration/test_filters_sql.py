"""connector.filters: Python's evaluate() and PostgreSQL running to_sql() agree, row by row.

The property test generates rows of a table with one column of each supported type (NULLs,
boundary values, NaN, infinities, BC dates, non-ASCII text…) and random filter trees over
them, and compares, for every row, ``evaluate(filter, to_jsonb(row))`` with PostgreSQL's
``SELECT <to_sql(filter)> FROM t AS r``. The session's time zone is not UTC, so to_jsonb
writes offsets (even local mean time offsets with seconds, before 1900).
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.filters import (
    Condition,
    Filter,
    bind_types,
    evaluate,
    parse_compact,
    parse_where,
    to_sql,
)
from connector.vocabulary import quote_ident

LABELS = ["sad", "ok", "happy", "Zürich", "B", "a", "it's"]
TEXT = 'we"ird'  # a text column with a hostile name

COLUMNS = {  # name: SQL type
    "i": "integer", "b": "bigint", "n": "numeric(20,6)", "d": "double precision",
    "f4": "real", TEXT: "text", "v": "varchar(10)", "c": "char(5)", "bo": "boolean",
    "tz": "timestamptz", "ts": "timestamp", "dt": "date", "u": "uuid", "m": "mood",
    "j": "jsonb", "any": "integer",
}
NAMES = [n for n in COLUMNS if n != "any"]  # `any` is reserved in the map form


async def create_table(pg: asyncpg.Connection) -> dict[str, str]:
    """The table; its column types as connector.binding passes them (enum:<name>). Where the
    server has ICU, the text columns get collations that a filter must ignore: a linguistic
    one (a < B < b < é < Z) and a case-insensitive, nondeterministic one ('a' = 'A')."""
    labels = ", ".join("'" + label.replace("'", "''") + "'" for label in LABELS)
    await pg.execute(f"CREATE TYPE mood AS ENUM ({labels})")
    collations = {}
    if await pg.fetchval("SELECT count(*) FROM pg_collation WHERE collname = 'und-x-icu'"):
        await pg.execute("CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', "
                         "deterministic = false)")
        collations = {TEXT: ' COLLATE "und-x-icu"', "c": ' COLLATE "und-x-icu"',
                      "v": " COLLATE nocase"}
    cols = ", ".join(f"{quote_ident(n)} {t}{collations.get(n, '')}" for n, t in COLUMNS.items())
    await pg.execute(f"CREATE TABLE t (id serial PRIMARY KEY, {cols})")
    await pg.execute("SET TimeZone = 'America/St_Johns'")
    rows = await pg.fetch("""
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, ty.typtype = 'e' AS enum
        FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
        WHERE a.attrelid = 't'::regclass AND a.attnum > 0 AND NOT a.attisdropped""")
    return {r["attname"]: ("enum:" if r["enum"] else "") + r["type"] for r in rows}


async def compare(pg: asyncpg.Connection, f: Filter, types: dict[str, str],
                  ) -> list[tuple[bool, dict[str, Any]]]:
    """(PostgreSQL's answer, the row as to_jsonb renders it) for every row of t, after
    checking that evaluate() gives the same answer."""
    sql = to_sql(f, "r", types)
    # the trigger's form: NULL may stand for false (pushdown.py uses it in WHEN clauses)
    when = to_sql(f, "r", types, null_is_false=True)
    got = await pg.fetch(f"SELECT to_jsonb(r)::text AS row, ({sql}) AS ok, "
                         f"({when}) IS TRUE AS when_ok FROM t AS r ORDER BY id")
    out = []
    for record in got:
        row = json.loads(record["row"], parse_float=Decimal)
        assert record["ok"] is not None, sql
        assert evaluate(f, row, types) is record["ok"], (sql, row)
        assert record["when_ok"] is record["ok"], (when, row)
        out.append((record["ok"], row))
    return out


async def insert(pg: asyncpg.Connection, rows: list[dict[str, str | None]]) -> None:
    """Rows given as PostgreSQL input text per column (None: NULL)."""
    names = list(COLUMNS)
    cols = ", ".join(quote_ident(n) for n in names)
    params = ", ".join(f"${i}::text::{COLUMNS[n]}" for i, n in enumerate(names, 1))
    await pg.executemany(f"INSERT INTO t ({cols}) VALUES ({params})",
                         [[r.get(n) for n in names] for r in rows])


# --------------------------------------------------------------------------- strategies


def float_text(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(x)


def float4(x: float) -> float:
    value: float = struct.unpack("<f", struct.pack("<f", x))[0]
    return value


OFFSETS = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-15 * 60, 15 * 60))
MOMENTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
TRICKY_TEXT = ["", " ", "a", "A", "B", "b", "é", "E", "ab", "a ", "ab  ", "Z", "€", "😀", "\t",
               "O'Brien", "back\\slash", "é́"]


def text_values(max_size: int) -> st.SearchStrategy[str]:
    return st.sampled_from([t for t in TRICKY_TEXT if len(t) <= max_size]) | st.text(
        CHARS, max_size=max_size)


# Per column: (row values as PostgreSQL input text, filter values as a config would hold them).
# Rows and filters draw from a small shared pool too, so that equal values are frequent.
VALUES: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {}


def _ints(bits: int) -> st.SearchStrategy[int]:
    top = 2 ** (bits - 1)
    return st.sampled_from([0, 1, -1, top - 1, -top, 100]) | st.integers(-top, top - 1)


for _name, _bits in (("i", 32), ("b", 64), ("any", 32)):
    _ints_s = _ints(_bits)
    VALUES[_name] = (_ints_s.map(str), _ints_s | _ints_s.map(str))

_numeric_rows = st.sampled_from([Decimal("0"), Decimal("-0.000001"), Decimal("NaN"),
                                 Decimal("99999999999999.999999"), Decimal("1.5")]) | st.decimals(
    min_value=-(10**14) + 1, max_value=10**14 - 1, places=6, allow_nan=False)
VALUES["n"] = (_numeric_rows.map(str), _numeric_rows | _numeric_rows.map(str) | st.sampled_from(
    ["Infinity", "-Infinity", "NaN", "1.0000005", "-0", "1e3"]) | st.decimals(
    min_value=-(10**15), max_value=10**15, places=8, allow_nan=False) | st.integers(-5, 5))

_doubles = st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, math.inf, -math.inf,
                            math.nan, 0.1, 1.5]) | st.floats()
VALUES["d"] = (_doubles.map(float_text), _doubles | _doubles.map(float_text))

_reals = st.sampled_from([0.0, -0.0, float4(1e-45), float4(3.4028234e38), math.inf, math.nan,
                          float4(0.1), 1.5]) | st.floats(width=32)
_real_filters = _reals | st.floats(min_value=1e-37, max_value=3.4e38).flatmap(
    lambda x: st.sampled_from([x, -x, repr(x)])) | st.sampled_from(["0.1", "16777217", "1e-45"])
VALUES["f4"] = (_reals.map(float_text), _real_filters)

for _name, _size in ((TEXT, 8), ("v", 10), ("c", 5)):
    _texts = text_values(_size)
    VALUES[_name] = (_texts, _texts | text_values(7))

VALUES["bo"] = (st.sampled_from(["true", "false"]),
                st.booleans() | st.sampled_from(["true", "false"]))

_tz_moments = st.builds(lambda m, tz: m.replace(tzinfo=tz), MOMENTS, OFFSETS)
_tz_rows = st.sampled_from(["infinity", "-infinity", "0044-03-15 12:00:00+00 BC",
                            "294276-12-31 23:59:59.999999+00", "0001-01-01 00:00:00+00",
                            "1900-01-01 00:00:00+00"]) | _tz_moments.map(datetime.isoformat)
VALUES["tz"] = (_tz_rows, st.sampled_from(["infinity", "-infinity", "0001-01-01T00:00:00Z",
                                           "1900-01-01 00:00:00"])
                | _tz_moments | _tz_moments.map(datetime.isoformat) | MOMENTS
                | MOMENTS.map(lambda m: m.isoformat(sep=" ")))

_ts_rows = st.sampled_from(["infinity", "-infinity", "4713-01-01 00:00:00 BC",
                            "294276-12-31 23:59:59.999999", "2026-01-02 03:04:05.5"]
                           ) | MOMENTS.map(datetime.isoformat)
VALUES["ts"] = (_ts_rows, st.sampled_from(["infinity", "-infinity", "2026-01-02T03:04:05.5"])
                | MOMENTS | MOMENTS.map(datetime.isoformat) | st.dates().map(date.isoformat))

_days = st.dates(min_value=date(1, 1, 1))
VALUES["dt"] = (st.sampled_from(["infinity", "-infinity", "0044-03-15 BC", "5874897-12-31",
                                 "2026-01-02", "0001-01-01"]) | _days.map(date.isoformat),
                _days | _days.map(date.isoformat) | st.sampled_from(["infinity", "-infinity"]))

_uuids = st.sampled_from([uuid.UUID(int=0), uuid.UUID(int=2**128 - 1),
                          uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")]) | st.uuids()
VALUES["u"] = (_uuids.map(str), _uuids.map(str) | _uuids.map(lambda u: str(u).upper())
               | _uuids.map(lambda u: "{" + u.hex + "}"))

VALUES["m"] = (st.sampled_from(LABELS), st.sampled_from([*LABELS, "nope", "OK"]))
VALUES["j"] = (st.sampled_from(["null", "{}", "[]", "0", '{"a": null}', '"x"']), st.nothing())

UNORDERED = {"bo", "m"}
NULL_ONLY = {"j"}


@st.composite
def pools(draw: st.DrawFn) -> dict[str, tuple[list[Any], list[Any]]]:
    """A few row and filter values per column for this example, drawn once."""
    out = {}
    for name, (rows, filters) in VALUES.items():
        out[name] = (draw(st.lists(rows, min_size=1, max_size=3)),
                     [] if name in NULL_ONLY else draw(st.lists(filters, min_size=1,
                                                                max_size=3)))
    return out


def usable_as_filter(name: str, row_text: Any) -> bool:
    """Row input text that a filter also takes (years 1 to 9999 only, for times)."""
    if name in NULL_ONLY:
        return False
    if name in ("tz", "ts", "dt"):
        return "BC" not in row_text and not row_text[4:5].isdigit()
    return True


def value(draw: st.DrawFn, pool: dict[str, tuple[list[Any], list[Any]]], name: str,
          filter_side: bool) -> Any:
    rows, filters = pool[name]
    choices = filters + [r for r in rows if usable_as_filter(name, r)] if filter_side else rows
    return draw(st.sampled_from(choices) | VALUES[name][1 if filter_side else 0])


@st.composite
def where(draw: st.DrawFn, pool: dict[str, tuple[list[Any], list[Any]]],
          depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(draw(st.integers(1 if depth else 0, 3))):
        name = draw(st.sampled_from(NAMES))
        if name in NULL_ONLY:
            ops = ["is_null"]
        else:
            allowed = ["eq", "neq", "in", "not_in", "is_null"]
            if name not in UNORDERED:
                allowed += ["lt", "lte", "gt", "gte"]
            ops = draw(st.lists(st.sampled_from(allowed), min_size=1, max_size=2, unique=True))
        spec: dict[str, Any] = {}
        for op in ops:
            if op == "is_null":
                spec[op] = draw(st.booleans())
            elif op in ("in", "not_in"):
                spec[op] = [value(draw, pool, name, True)
                            for _ in range(draw(st.integers(1, 3)))]
            else:
                spec[op] = value(draw, pool, name, True)
        if list(spec) == ["eq"] and name not in out and draw(st.booleans()):
            out[name] = spec["eq"]  # the shorthand
        elif isinstance(out.get(name), dict):
            out[name] = {**out[name], **spec}
        else:
            out[name] = spec
    if depth < 2 and draw(st.integers(0, 2)) == 0:
        out["any"] = [draw(where(pool, depth + 1)) for _ in range(draw(st.integers(1, 3)))]
    return out


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, str | None]]]:
    pool = draw(pools())
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        rows.append({name: None if draw(st.integers(0, 4)) == 0
                     else value(draw, pool, name, False) for name in COLUMNS})
    return draw(where(pool)), rows


@pytest.fixture
async def table(pg: asyncpg.Connection) -> dict[str, str]:
    return await create_table(pg)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(case=cases())
async def test_evaluate_agrees_with_postgresql(
        pg: asyncpg.Connection, table: dict[str, str],
        case: tuple[dict[str, Any], list[dict[str, str | None]]]) -> None:
    raw, rows = case
    parsed, problems = parse_where(raw, "where")
    assert parsed is not None, problems
    bound, problems = bind_types(parsed, table, "where", table="public.t")
    assert bound is not None, (raw, problems)
    await pg.execute("TRUNCATE t")
    await insert(pg, rows)
    await compare(pg, bound, table)


# --------------------------------------------------------------------------- hand-picked


async def run(pg: asyncpg.Connection, types: dict[str, str], where: dict[str, Any],
              rows: list[dict[str, str | None]]) -> list[bool]:
    parsed, problems = parse_where(where, "where")
    assert parsed is not None, problems
    bound, problems = bind_types(parsed, types, "where")
    assert bound is not None, problems
    await pg.execute("TRUNCATE t")
    await insert(pg, rows)
    return [ok for ok, _ in await compare(pg, bound, types)]


async def check_cases(pg: asyncpg.Connection, types: dict[str, str],
                      rows: list[dict[str, str | None]],
                      cases: list[tuple[dict[str, Any], list[bool]]]) -> None:
    for where, expected in cases:
        assert await run(pg, types, where, rows) == expected, where


NAN_ROWS: list[dict[str, str | None]] = [
    {"n": "NaN", "d": "NaN", "f4": "NaN"}, {"n": "1", "d": "Infinity", "f4": "-Infinity"},
    {"n": "-0", "d": "-0", "f4": "-0"}, {"n": None, "d": None, "f4": None}]


NAN_CASES: list[tuple[dict[str, Any], list[bool]]] = [
    ({"n": "NaN"}, [True, False, False, False]),
    ({"n": {"gt": "Infinity"}}, [True, False, False, False]),  # NaN sorts above everything
    ({"d": {"gte": "Infinity"}}, [True, True, False, False]),
    ({"d": {"eq": 0}}, [False, False, True, False]),  # -0 = 0
    ({"f4": {"lt": 0.0}}, [False, True, False, False]),
    ({"f4": {"neq": 0}}, [True, True, False, False]),  # NULL is not "not equal"
    ({"n": {"not_in": ["NaN", 1]}}, [False, False, True, False]),
    ({"d": {"is_null": True}}, [False, False, False, True]),
]


async def test_nan_infinity_and_negative_zero(pg: asyncpg.Connection,
                                              table: dict[str, str]) -> None:
    await check_cases(pg, table, NAN_ROWS, NAN_CASES)


REAL_ROWS: list[dict[str, str | None]] = [{"f4": "0.1"}, {"f4": "1e-45"},
                                          {"f4": "3.4028235e38"}, {"f4": "16777217"}]
REAL_CASES: list[tuple[dict[str, Any], list[bool]]] = [
    # to_jsonb writes a real's shortest digits ("0.1"): read as a double they would differ
    ({"f4": 0.1}, [True, False, False, False]),
    ({"f4": {"gt": 0.1}}, [False, False, True, True]),
    ({"f4": {"lte": "1.4e-45"}}, [False, True, False, False]),
    ({"f4": "16777216"}, [False, False, False, True]),
    ({"f4": {"in": ["3.4028235e38", "0.1"]}}, [True, False, True, False]),
    ({"f4": {"gte": "3.4028234e38"}}, [False, False, True, False]),
]


async def test_real_is_single_precision(pg: asyncpg.Connection, table: dict[str, str]) -> None:
    await check_cases(pg, table, REAL_ROWS, REAL_CASES)


TIME_ROWS: list[dict[str, str | None]] = [
    {"tz": "infinity", "ts": "-infinity", "dt": "infinity"},
    {"tz": "2026-01-02 03:04:05+00", "ts": "2026-01-02 03:04:05", "dt": "2026-01-02"},
    {"tz": "0001-01-01 00:00:00+00", "ts": "4713-01-01 00:00:00 BC", "dt": "0044-03-15 BC"},
]


TIME_CASES: list[tuple[dict[str, Any], list[bool]]] = [
    ({"tz": {"gt": "9999-12-31T23:59:59Z"}}, [True, False, False]),
    ({"tz": "2026-01-02T05:04:05+02:00"}, [False, True, False]),  # the same instant
    ({"tz": "2026-01-02 03:04:05"}, [False, True, False]),  # no offset: UTC
    ({"tz": {"lt": "0001-01-01T00:00:01+00:00"}}, [False, False, True]),
    ({"ts": {"lt": "0001-01-01T00:00:00"}}, [True, False, True]),
    ({"ts": "-infinity"}, [True, False, False]),
    ({"dt": {"gte": "infinity"}}, [True, False, False]),
    ({"dt": {"lt": "0001-01-01"}}, [False, False, True]),
]


async def test_infinite_and_ancient_timestamps(pg: asyncpg.Connection,
                                               table: dict[str, str]) -> None:
    await check_cases(pg, table, TIME_ROWS, TIME_CASES)


CHAR_ROWS: list[dict[str, str | None]] = [{"c": "ab", "v": "ab"}, {"c": "ab   ", "v": "ab  "},
                                          {"c": "ab\t", "v": "ab\t"}, {"c": "", "v": ""}]


CHAR_CASES: list[tuple[dict[str, Any], list[bool]]] = [
    ({"c": "ab"}, [True, True, False, False]),  # char(n): trailing blanks do not count
    ({"c": "ab  "}, [True, True, False, False]),
    ({"c": {"lt": "ab\t"}}, [True, True, False, True]),
    ({"c": {"eq": ""}}, [False, False, False, True]),
    ({"v": "ab"}, [True, False, False, False]),  # varchar: they do
    ({"v": {"gt": "ab"}}, [False, True, True, False]),
]


async def test_char_padding(pg: asyncpg.Connection, table: dict[str, str]) -> None:
    await check_cases(pg, table, CHAR_ROWS, CHAR_CASES)
    assert await pg.fetchval("SELECT to_jsonb(t) ->> 'c' FROM t ORDER BY id LIMIT 1") == "ab   "


ORDER_ROWS: list[dict[str, str | None]] = [{TEXT: "a"}, {TEXT: "B"}, {TEXT: "é"}, {TEXT: "b"},
                                           {TEXT: "Z"}, {TEXT: "😀"}]


ORDER_CASES: list[tuple[dict[str, Any], list[bool]]] = [
    ({TEXT: {"lt": "a"}}, [False, True, False, False, True, False]),  # byte order: B, Z < a
    ({TEXT: {"gt": "b"}}, [False, False, True, False, False, True]),  # é, 😀 > b
    ({TEXT: {"gte": "é", "lt": "😀"}}, [False, False, True, False, False, False]),
    ({TEXT: {"in": ["A", "b"]}}, [False, False, False, True, False, False]),  # case matters
]


async def test_text_compares_in_byte_order(pg: asyncpg.Connection,
                                           table: dict[str, str]) -> None:
    # The column's linguistic collation sorts a < B < b < é < Z; a filter must not.
    await check_cases(pg, table, ORDER_ROWS, ORDER_CASES)
    ordered = [r[0] for r in await pg.fetch(f"SELECT {quote_ident(TEXT)} FROM t ORDER BY 1")]
    if ordered == ["a", "B", "b", "é", "Z", "😀"]:  # (only with ICU: else nothing to prove)
        assert await run(pg, table, {TEXT: {"lt": "b"}}, ORDER_ROWS) == [
            False, True, False, False, True, False]


async def test_case_insensitive_collations_do_not_leak_into_equality(
        pg: asyncpg.Connection, table: dict[str, str]) -> None:
    rows: list[dict[str, str | None]] = [{"v": "abc"}, {"v": "ABC"}, {"v": "abd"}]
    assert await run(pg, table, {"v": "abc"}, rows) == [True, False, False]
    assert await run(pg, table, {"v": {"in": ["ABC"]}}, rows) == [False, True, False]
    assert await run(pg, table, {"v": {"gte": "abc"}}, rows) == [True, False, True]


async def test_json_null_counts_as_null(pg: asyncpg.Connection, table: dict[str, str]) -> None:
    rows: list[dict[str, str | None]] = [{"j": "null"}, {"j": None}, {"j": "{}"}]
    assert await run(pg, table, {"j": {"is_null": True}}, rows) == [True, True, False]
    assert await run(pg, table, {"j": {"is_null": False}}, rows) == [False, False, True]


async def test_enum_labels_compare_as_text(pg: asyncpg.Connection,
                                           table: dict[str, str]) -> None:
    rows: list[dict[str, str | None]] = [{"m": "it's"}, {"m": "Zürich"}, {"m": None}]
    assert await run(pg, table, {"m": {"neq": "nope"}}, rows) == [True, True, False]
    assert await run(pg, table, {"m": {"in": ["it's", "ok"]}}, rows) == [True, False, False]


async def test_a_trigger_when_clause_decides_like_evaluate(
        pg: asyncpg.Connection, table: dict[str, str]) -> None:
    """The same SQL over NEW, where it is used: a trigger's WHEN clause."""
    parsed, _ = parse_where({"i": {"gte": 10}, TEXT: {"neq": "O'Brien"}, "any": [
        {"tz": {"lt": "2026-01-01T00:00:00+01:00"}}, {"m": {"in": ["it's", "B"]}},
        {"c": "x", "u": {"is_null": True}}]}, "where")
    assert parsed is not None
    f, problems = bind_types(parsed, table, "where")
    assert f is not None, problems
    await pg.execute("CREATE TABLE seen (id int)")
    await pg.execute("CREATE FUNCTION log_row() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$BEGIN INSERT INTO seen VALUES (NEW.id); RETURN NULL; END$$")
    when = to_sql(f, "NEW", table, null_is_false=True)
    await pg.execute(f"CREATE TRIGGER pick AFTER INSERT ON t FOR EACH ROW "
                     f"WHEN ({when}) EXECUTE FUNCTION log_row()")
    await pg.execute("SET standard_conforming_strings = off")  # the literals do not care
    await insert(pg, [
        {"i": "10", TEXT: "x", "tz": "2025-12-31 23:00:00+01"},
        {"i": "10", TEXT: "x", "tz": "2025-12-31 23:00:00+00"},
        {"i": "9", TEXT: "x", "m": "B"},
        {"i": "11", TEXT: "O'Brien", "m": "B"},
        {"i": "11", TEXT: None, "m": "B"},
        {"i": "11", TEXT: "back\\slash", "m": "it's"},
        {"i": "12", TEXT: "", "c": "x    "},
    ])
    seen = [r["id"] for r in await pg.fetch("SELECT id FROM seen ORDER BY id")]
    decided = await compare(pg, f, table)
    assert seen == [row["id"] for ok, row in decided if ok] == [1, 6, 7]


async def test_a_column_named_any_through_the_compact_syntax(
        pg: asyncpg.Connection, table: dict[str, str]) -> None:
    query = parse_compact('insert:t:"any".gte.5,i.in.(1,2)')
    assert query.filter is not None
    f, problems = bind_types(query.filter, table, "query")
    assert f is not None, problems
    await insert(pg, [{"any": "5", "i": "1"}, {"any": "4", "i": "1"}, {"any": "9", "i": "3"}])
    assert [ok for ok, _ in await compare(pg, f, table)] == [True, False, False]


async def test_to_jsonb_renders_each_type_as_evaluate_reads_it(
        pg: asyncpg.Connection, table: dict[str, str]) -> None:
    """The shapes evaluate() relies on (strings for NaN and infinities, padded char(n), …)."""
    await insert(pg, [{"n": "NaN", "d": "-Infinity", "f4": "-0", "c": "a", "tz": "infinity",
                       "ts": "4713-01-01 00:00:00 BC", "dt": "0044-03-15 BC",
                       "u": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "bo": "true",
                       "m": "Zürich", "j": "null"},
                      {"n": "1.5", "d": "0.1", "f4": "0.1",
                       "tz": "0001-01-01 00:00:00+00", "ts": "2026-01-02 03:04:05.5"}])
    texts = [r[0] for r in await pg.fetch("SELECT to_jsonb(t)::text FROM t ORDER BY id")]
    first, second = (json.loads(t, parse_float=Decimal) for t in texts)
    assert (first["n"], first["d"], first["f4"], first["c"]) == ("NaN", "-Infinity", 0, "a    ")
    assert (first["tz"], first["ts"], first["dt"]) == (
        "infinity", "4713-01-01T00:00:00 BC", "0044-03-15 BC")
    assert first["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" and first["j"] is None
    assert (second["n"], second["d"], second["f4"]) == (Decimal("1.500000"), Decimal("0.1"),
                                                       Decimal("0.1"))
    assert second["tz"] == "0001-12-31T20:29:08-03:30:52 BC"  # local mean time, with seconds
    assert second["ts"] == "2026-01-02T03:04:05.5"


EDGE_VALUES = [
    ("f4", "0.1"), ("f4", "16777217"), ("f4", "1e-45"), ("f4", "7.006492321624086e-46"),
    ("f4", "7.006492321624085e-46"), ("f4", "3.4028235677973366e38"),
    ("f4", "3.4028235677973367e38"), ("f4", "1.00000005960464477539062500000001"),
    ("f4", "1.000000059604644775390625"), ("f4", "-Infinity"),
    ("d", "2.4703282292062328e-324"), ("d", "2.4703282292062327e-324"), ("d", "1e-400"),
    ("d", "1.7976931348623158e308"), ("d", "1.7976931348623159e308"), ("d", "NaN"),
    ("n", "1e131071"), ("n", "1e131072"), ("n", "1e-16383"), ("n", "1e-16384"),
    ("n", "-Infinity"), ("i", "-2147483648"), ("i", "2147483648"),
    ("b", "-9223372036854775808"), ("b", "9223372036854775808"),
    ("tz", "2026-01-02T03:04:05+15:59:59"), ("tz", "2026-01-02T03:04:05+16:00"),
    ("tz", "0001-01-01T00:00:00+01:00"), ("ts", "2026-02-29T00:00:00"),
    ("dt", "2024-02-29"), ("u", "{A0EEBC999C0B4EF8BB6D6BB9BD380A11}"),
]


async def test_values_bind_as_postgresql_reads_them(pg: asyncpg.Connection,
                                                    table: dict[str, str]) -> None:
    """A value bind_types accepts means what PostgreSQL reads from the same text (the literal
    to_sql writes equals it); one it refuses, PostgreSQL refuses too."""
    for column, text in EDGE_VALUES:
        await check_edge_value(pg, table, column, text)


async def check_edge_value(pg: asyncpg.Connection, table: dict[str, str], column: str,
                           text: str) -> None:
    as_read = f"$1::text::{'numeric' if column == 'n' else COLUMNS[column]}"  # no typmod
    try:
        expected = await pg.fetchval(f"SELECT ({as_read})::text", text)
    except asyncpg.PostgresError:
        expected = None
    f, problems = bind_types(Filter((Condition(column, "eq", text),)), table, "where")
    if expected is None:
        assert f is None and problems, (column, text)
        return
    assert f is not None, (column, text, problems)
    sql = to_sql(f, "r", table).replace(f"r.{quote_ident(column)}", as_read)
    assert await pg.fetchval(f"SELECT {sql}", text) is True, (text, sql)
