"""connector.filters without a database: parsing, typing, evaluation, SQL text, compact syntax.
(tests/integration/test_filters_sql.py checks evaluate() against PostgreSQL itself.)"""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from connector.filters import (
    CompactQuery,
    Condition,
    Filter,
    bind_types,
    columns,
    evaluate,
    parse_compact,
    parse_where,
    to_sql,
)

P = "routes[0].where"
TYPES = {
    "id": "integer", "small": "smallint", "big": "bigint", "amount": "numeric(12,2)",
    "ratio": "double precision", "weight": "real", "name": "text",
    "code": "character varying(20)", "tag": "character(5)", "ok": "boolean",
    "at": "timestamp with time zone", "local": "timestamp without time zone", "day": "date",
    "uid": "uuid", "feeling": "enum:mood", "doc": "jsonb", "raw": "json", "ids": "integer[]",
    "blob": "bytea", "point": "my_composite", 'we"ird': "text", "any": "integer",
}


def parse(raw: Any) -> Filter:
    f, problems = parse_where(raw, P)
    assert f is not None, problems
    return f


def bound(raw: Any, types: dict[str, str] = TYPES) -> Filter:
    f, problems = bind_types(parse(raw), types, P, table="public.t")
    assert f is not None, problems
    return f


def parse_problems(raw: Any) -> list[str]:
    f, problems = parse_where(raw, P)
    assert f is None
    return problems


def bind_problems(raw: Any, types: dict[str, str] = TYPES) -> list[str]:
    f, problems = bind_types(parse(raw), types, P, table="public.t")
    assert f is None
    return problems


def matches(raw: Any, row: dict[str, Any]) -> bool:
    return evaluate(bound(raw), row, TYPES)


# --------------------------------------------------------------------------- parse_where


def test_every_operator_and_the_shorthand() -> None:
    f = parse({"status": "active", "amount": {"gte": 100, "lt": 10000}, "a": {"eq": 1},
               "b": {"neq": 2}, "c": {"lte": 3}, "d": {"gt": 4}, "region": {"in": ["eu", "us"]},
               "e": {"not_in": [5]}, "deleted_at": {"is_null": True}})
    assert f.conditions == (
        Condition("status", "eq", "active"), Condition("amount", "gte", 100),
        Condition("amount", "lt", 10000), Condition("a", "eq", 1), Condition("b", "neq", 2),
        Condition("c", "lte", 3), Condition("d", "gt", 4),
        Condition("region", "in", ("eu", "us")), Condition("e", "not_in", (5,)),
        Condition("deleted_at", "is_null", True))
    assert f.any_of == ()
    assert f.conditions[0].shorthand and not f.conditions[3].shorthand


def test_any_ors_maps_that_are_anded_and_may_nest() -> None:
    f = parse({"kind": "x", "any": [{"kind": "a"}, {"score": {"lt": 0}, "kind": "b"},
                                    {"any": [{"p": 1}, {"q": 2}]}]})
    assert f == Filter((Condition("kind", "eq", "x"),), (
        Filter((Condition("kind", "eq", "a"),)),
        Filter((Condition("score", "lt", 0), Condition("kind", "eq", "b"))),
        Filter((), (Filter((Condition("p", "eq", 1),)), Filter((Condition("q", "eq", 2),))))))
    assert columns(f) == {"kind", "score", "p", "q"}


def test_an_empty_where_is_every_row() -> None:
    assert parse({}) == Filter()
    assert evaluate(Filter(), {}, {}) is True
    assert to_sql(Filter(), "NEW", {}) == "true"


def test_values_are_kept_as_written() -> None:
    f = parse({"at": datetime(2026, 1, 2, tzinfo=UTC), "day": date(2026, 1, 2),
               "x": {"gte": 1.5}, "y": "5"})
    assert [c.value for c in f.conditions] == [datetime(2026, 1, 2, tzinfo=UTC),
                                                date(2026, 1, 2), 1.5, "5"]


@pytest.mark.parametrize(("raw", "problem"), [
    ({"amount": {"gtee": 1}},
     f"{P}.amount: unknown operator 'gtee' (expected eq, neq, lt, lte, gt, gte, in, not_in, "
     "is_null)"),
    ({"region": {"in": "eu"}}, f"{P}.region.in: expected a list"),
    ({"region": {"not_in": {"a": 1}}}, f"{P}.region.not_in: expected a list"),
    ({"region": {"in": []}}, f"{P}.region.in: expected a non-empty list"),
    ({"region": {"in": ["eu", None]}}, f"{P}.region.in[1]: null is not a value; use is_null"),
    ({"region": {"in": [["eu"]]}}, f"{P}.region.in[0]: expected a single value, got a list"),
    ({"deleted_at": {"is_null": 1}}, f"{P}.deleted_at.is_null: expected true or false"),
    ({"deleted_at": {"is_null": "true"}}, f"{P}.deleted_at.is_null: expected true or false"),
    ({"any": [{"a": 1}, "b"]}, f"{P}.any[1]: expected a mapping"),
    ({"any": {"a": 1}}, f"{P}.any: expected a list of mappings ('any' is reserved: it ORs the "
     "mappings it lists)"),
    ({"any": []}, f"{P}.any: expected at least one mapping"),
    ({"any": [{}]}, f"{P}.any[0]: expected at least one condition"),
    ({"any": [{"any": [{"a": {"bad": 1}}]}]},
     f"{P}.any[0].any[0].a: unknown operator 'bad' (expected eq, neq, lt, lte, gt, gte, in, "
     "not_in, is_null)"),
    ({"status": None}, f"{P}.status: null is not a value; write {{is_null: true}}"),
    ({"status": {"eq": None}}, f"{P}.status.eq: null is not a value; use is_null"),
    ({"status": ["a", "b"]},
     f"{P}.status: a list is not a value; for one of several values write {{in: [...]}}"),
    ({"status": {"eq": ["a"]}}, f"{P}.status.eq: expected a single value, got a list"),
    ({"status": {"eq": {"a": 1}}}, f"{P}.status.eq: expected a single value, got a mapping"),
    ({"status": {}}, f"{P}.status: expected at least one operator (eq, neq, lt, lte, gt, gte, "
     "in, not_in, is_null)"),
    ({"status": b"x"}, f"{P}.status: expected a value or a mapping of operators, got bytes"),
    ({1: "x"}, f'{P}["1"]: expected a column name (a string), got int'),
    ({"my col": {"bad": 1}}, f'{P}["my col"]: unknown operator \'bad\' (expected eq, neq, lt, '
     "lte, gt, gte, in, not_in, is_null)"),
])
def test_structural_problems(raw: Any, problem: str) -> None:
    assert parse_problems(raw) == [problem]


def test_every_problem_is_reported() -> None:
    assert parse_problems({"a": {"gtee": 1}, "b": {"in": 1}, "any": [1, {"c": {"is_null": 0}}]}
                          ) == [f"{P}.a: unknown operator 'gtee' (expected eq, neq, lt, lte, gt, "
                                "gte, in, not_in, is_null)",
                                f"{P}.b.in: expected a list", f"{P}.any[0]: expected a mapping",
                                f"{P}.any[1].c.is_null: expected true or false"]


def test_a_non_mapping_where() -> None:
    assert parse_where(["a"], P) == (None, [f"{P}: expected a mapping"])


# --------------------------------------------------------------------------- bind_types


def one(raw: Any, types: dict[str, str] = TYPES) -> Any:
    """The bound value of a one-condition filter."""
    (c,) = bound(raw, types).conditions
    return c.value


@pytest.mark.parametrize(("raw", "value"), [
    ({"id": 5}, 5), ({"id": "5"}, 5), ({"id": "-5"}, -5), ({"id": 5.0}, 5),
    ({"id": Decimal("5.00")}, 5), ({"id": {"in": [1, "2"]}}, (1, 2)),
    ({"id": 2**31 - 1}, 2**31 - 1), ({"small": -(2**15)}, -(2**15)),
    ({"big": "9223372036854775807"}, 2**63 - 1),
    ({"amount": 100}, Decimal(100)), ({"amount": "99.99"}, Decimal("99.99")),
    ({"amount": 0.1}, Decimal("0.1")), ({"amount": "1e3"}, Decimal("1e3")),
    ({"amount": "1.123456789"}, Decimal("1.123456789")),  # not rounded to the column's scale
    ({"amount": "Infinity"}, Decimal("Infinity")), ({"amount": "-inf"}, Decimal("-Infinity")),
    ({"ratio": 0.1}, 0.1), ({"ratio": "1e308"}, 1e308), ({"ratio": "-Infinity"}, float("-inf")),
    ({"ratio": 3}, 3.0), ({"ratio": "5e-324"}, 5e-324),
    ({"weight": 0.1}, struct.unpack("<f", struct.pack("<f", 0.1))[0]),
    ({"weight": "16777217"}, 16777216.0),  # ties to even in single precision
    ({"name": "O'Brien"}, "O'Brien"), ({"code": ""}, ""), ({"tag": "ab "}, "ab "),
    ({"feeling": "happy"}, "happy"),
    ({"ok": True}, True), ({"ok": "false"}, False), ({"ok": "TRUE"}, True),
    ({"uid": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"}, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ({"uid": "{a0eebc999c0b4ef8bb6d6bb9bd380a11}"}, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ({"at": "2026-01-02T03:04:05.123456+02:00"},
     datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))),
    ({"at": "2026-01-02 03:04:05Z"}, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ({"at": "2026-01-02T03:04"}, datetime(2026, 1, 2, 3, 4, tzinfo=UTC)),  # no offset: UTC
    ({"at": "2026-01-02"}, datetime(2026, 1, 2, tzinfo=UTC)),
    ({"at": "2026-01-02T03:04:05.5-0330"},
     datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=timezone(-timedelta(hours=3, minutes=30)))),
    ({"at": datetime(2026, 1, 2)}, datetime(2026, 1, 2, tzinfo=UTC)),
    ({"at": date(2026, 1, 2)}, datetime(2026, 1, 2, tzinfo=UTC)),
    ({"at": "Infinity"}, "infinity"), ({"at": "-infinity"}, "-infinity"),
    ({"local": "2026-01-02T03:04:05"}, datetime(2026, 1, 2, 3, 4, 5)),
    ({"local": datetime(2026, 1, 2, 3)}, datetime(2026, 1, 2, 3)),
    ({"day": "2026-01-02"}, date(2026, 1, 2)), ({"day": date(2026, 1, 2)}, date(2026, 1, 2)),
    ({"day": "infinity"}, "infinity"),
    ({"doc": {"is_null": True}}, True), ({"ids": {"is_null": False}}, False),
    ({'we"ird': "x"}, "x"),
])
def test_values_take_their_column_type(raw: Any, value: Any) -> None:
    got = one(raw)
    assert got == value and type(got) is type(value)


def test_nan_is_kept() -> None:
    assert one({"amount": "NaN"}).is_nan() and one({"amount": float("nan")}).is_nan()
    assert one({"ratio": "nan"}) != one({"ratio": "nan"})  # a float NaN


def test_type_names_with_typmods_and_aliases() -> None:
    types = {"a": "int4", "b": "varchar(3)", "c": "timestamptz", "d": "timestamp(3) with time zone",
             "e": "numeric", "f": "float8", "g": "bpchar", "h": "decimal(5, 2)", "i": "int8",
             "j": "character varying"}
    f = bound({"a": "1", "b": "x", "c": "2026-01-02", "d": "2026-01-02", "e": 1, "f": 1,
               "g": "x", "h": "1.5", "i": 2, "j": "y"}, types)
    assert [type(c.value) for c in f.conditions] == [int, str, datetime, datetime, Decimal,
                                                     float, str, Decimal, int, str]


def c_path(column: str, op: str) -> str:
    return f"{P}.{column}.{op}"


@pytest.mark.parametrize(("raw", "problem"), [
    ({"amount": {"gte": "abc"}},
     f"{P}.amount.gte: expected a number for column amount (numeric(12,2)), got 'abc'"),
    ({"amount": {"gte": True}},
     f"{P}.amount.gte: expected a number for column amount (numeric(12,2)), got true"),
    ({"amount": {"gte": "1e131072"}},
     f"{P}.amount.gte: '1e131072' is out of range for column amount (numeric(12,2))"),
    ({"id": 1.5}, f"{P}.id: expected an integer for column id (integer), got 1.5"),
    ({"id": "NaN"}, f"{P}.id: expected an integer for column id (integer), got 'NaN'"),
    ({"id": {"eq": 2**31}},
     f"{P}.id.eq: expected an integer from -2147483648 to 2147483647 for column id (integer), "
     "got 2147483648"),
    ({"small": 40000},
     f"{P}.small: expected an integer from -32768 to 32767 for column small (smallint), "
     "got 40000"),
    ({"id": " 5"}, f"{P}.id: expected an integer for column id (integer), got ' 5'"),
    ({"ratio": "1e400"}, f"{P}.ratio: '1e400' is out of range for column ratio (double precision)"),
    ({"ratio": "1e-400"},
     f"{P}.ratio: '1e-400' is out of range for column ratio (double precision)"),
    ({"weight": "1e39"}, f"{P}.weight: '1e39' is out of range for column weight (real)"),
    ({"weight": "1e-50"}, f"{P}.weight: '1e-50' is out of range for column weight (real)"),
    ({"name": 5}, f"{P}.name: expected a string for column name (text), got 5 (quote it in YAML)"),
    ({"code": False},
     f"{P}.code: expected a string for column code (character varying(20)), got false "
     "(quote it in YAML)"),
    ({"name": "a\x00b"}, f"{P}.name: a value may not contain a NUL character"),
    ({"name": "\ud800"}, f"{P}.name: a value must be valid Unicode (no lone surrogates)"),
    ({"ok": "yes"}, f"{P}.ok: expected true or false for column ok (boolean), got 'yes'"),
    ({"ok": 1}, f"{P}.ok: expected true or false for column ok (boolean), got 1"),
    ({"uid": "nope"}, f"{P}.uid: expected a uuid for column uid (uuid), got 'nope'"),
    ({"uid": "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
     f"{P}.uid: expected a uuid for column uid (uuid), "
     "got '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"),
    ({"at": "yesterday"},
     f"{P}.at: expected a timestamp like 2026-01-02T03:04:05+00:00 (without an offset: UTC) or "
     "infinity for column at (timestamp with time zone), got 'yesterday'"),
    ({"at": "2026-02-30T00:00:00Z"}, None),
    ({"at": "2026-01-02T03:04:05.1234567Z"}, None),  # PostgreSQL keeps microseconds
    ({"at": "2026-01-02T03:04:05+16:00"}, None),  # beyond PostgreSQL's ±15:59:59
    ({"at": "10000-01-01T00:00:00Z"}, None),
    ({"at": 5}, None),
    ({"local": "2026-01-02T03:04:05+00:00"},
     f"{P}.local: expected a timestamp like 2026-01-02T03:04:05, without an offset or infinity "
     "for column local (timestamp without time zone), got '2026-01-02T03:04:05+00:00'"),
    ({"local": datetime(2026, 1, 2, tzinfo=UTC)}, None),
    ({"day": "2026-01-02T00:00:00"},
     f"{P}.day: expected a date like 2026-01-02 or infinity for column day (date), "
     "got '2026-01-02T00:00:00'"),
    ({"day": datetime(2026, 1, 2)}, None),
    ({"ok": {"lt": True}},
     f"{P}.ok.lt: operator 'lt' does not apply to column ok (boolean): it is not ordered; use "
     "eq, neq, in, not_in or is_null"),
    ({"feeling": {"gte": "ok"}},
     f"{P}.feeling.gte: operator 'gte' does not apply to column feeling (mood): enums are not "
     "ordered by filters; use eq, neq, in, not_in or is_null"),
    ({"doc": {"eq": "x"}}, f"{P}.doc.eq: column doc (jsonb) can only be tested with is_null"),
    ({"raw": {"neq": "x"}}, f"{P}.raw.neq: column raw (json) can only be tested with is_null"),
    ({"ids": {"in": [1]}}, f"{P}.ids.in: column ids (integer[]) can only be tested with is_null"),
    ({"blob": {"lt": "x"}}, f"{P}.blob.lt: column blob (bytea) can only be tested with is_null"),
    ({"point": "x"}, f"{P}.point: column point (my_composite) can only be tested with is_null"),
    ({"colx": 1}, f"{P}.colx: unknown column 'colx' in public.t"),
    ({"id": {"in": [1, "x", 3, 1.5]}}, [
        f"{P}.id.in[1]: expected an integer for column id (integer), got 'x'",
        f"{P}.id.in[3]: expected an integer for column id (integer), got 1.5"]),
    ({"any": [{"id": 1}, {"ok": True, "name": 2}]},
     f"{P}.any[1].name: expected a string for column name (text), got 2 (quote it in YAML)"),
    ({'we"ird': 1}, f'{P}["we\\"ird"]: expected a string for column we"ird (text), got 1 '
     "(quote it in YAML)"),
])
def test_typing_problems(raw: Any, problem: str | list[str] | None) -> None:
    problems = bind_problems(raw)
    if problem is None:
        assert len(problems) == 1 and "expected a" in problems[0], problems
    else:
        assert problems == ([problem] if isinstance(problem, str) else problem)


def test_an_unknown_column_is_reported_once_and_names_the_table() -> None:
    f = parse({"colx": {"gt": 1, "lt": 5}, "any": [{"coly": 1}]})
    assert bind_types(f, TYPES, P) == (None, [f"{P}.colx: unknown column 'colx' in <table>",
                                              f"{P}.any[0].coly: unknown column 'coly' in <table>"])


def test_every_typing_problem_is_reported() -> None:
    assert len(bind_problems({"id": "x", "name": 1, "ok": {"lt": 1}, "zz": 1})) == 4


def test_binding_a_bound_filter_changes_nothing() -> None:
    f = bound({"id": "5", "amount": "1.5", "ratio": "0.1", "weight": "0.1", "tag": "ab ",
               "ok": "true", "uid": "{A0EEBC999C0B4EF8BB6D6BB9BD380A11}", "day": "2026-01-02",
               "at": "2026-01-02T03:04:05+05:30", "local": "2026-01-02 03:04",
               "feeling": {"in": ["ok"]}, "doc": {"is_null": True}, "any": [{"at": "infinity"}]})
    assert bind_types(f, TYPES, P) == (f, [])


def test_bind_checks_hand_built_filters() -> None:
    f = Filter((Condition("id", "in", ()), Condition("id", "like", "x"),
                Condition("id", "is_null", "yes")))
    assert bind_types(f, TYPES, "q") == (None, [
        "q.id.in: expected a non-empty list",
        "q.id.like: unknown operator 'like' (expected eq, neq, lt, lte, gt, gte, in, not_in, "
        "is_null)",
        "q.id.is_null: expected true or false"])


# --------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize(("raw", "row", "expected"), [
    # integers, and NULL semantics
    ({"id": 5}, {"id": 5}, True), ({"id": 5}, {"id": 6}, False),
    ({"id": {"neq": 5}}, {"id": 6}, True), ({"id": {"neq": 5}}, {"id": None}, False),
    ({"id": {"neq": 5}}, {}, False),
    ({"id": {"lt": 5}}, {"id": 4}, True), ({"id": {"lt": 5}}, {"id": 5}, False),
    ({"id": {"lte": 5}}, {"id": 5}, True), ({"id": {"gt": 5}}, {"id": 5}, False),
    ({"id": {"gte": 5}}, {"id": 5}, True), ({"id": {"gte": 5}}, {"id": None}, False),
    ({"id": {"in": [1, 2]}}, {"id": 2}, True), ({"id": {"in": [1, 2]}}, {"id": 3}, False),
    ({"id": {"not_in": [1, 2]}}, {"id": 3}, True), ({"id": {"not_in": [1, 2]}}, {"id": 1}, False),
    ({"id": {"not_in": [1, 2]}}, {"id": None}, False),
    ({"id": {"is_null": True}}, {"id": None}, True), ({"id": {"is_null": True}}, {}, True),
    ({"id": {"is_null": False}}, {"id": 0}, True), ({"id": {"is_null": True}}, {"id": 0}, False),
    ({"id": {"gte": 1, "lt": 10}}, {"id": 10}, False), ({"id": 1}, {"id": True}, False),
    ({"id": 1}, {"id": "1"}, False),  # not of the column's type (the table changed)
    # numeric: exact, NaN and infinities as to_jsonb writes them (strings)
    ({"amount": {"gte": 100}}, {"amount": Decimal("100.00")}, True),
    ({"amount": {"gte": 100}}, {"amount": Decimal("99.99")}, False),
    ({"amount": "1.10"}, {"amount": Decimal("1.1")}, True),
    ({"amount": {"lt": "0.30000000000000000001"}}, {"amount": Decimal("0.3")}, True),
    ({"amount": {"gt": 10**20}}, {"amount": "Infinity"}, True),
    ({"amount": {"lt": -(10**20)}}, {"amount": "-Infinity"}, True),
    ({"amount": {"gt": "Infinity"}}, {"amount": "NaN"}, True),
    ({"amount": "NaN"}, {"amount": "NaN"}, True), ({"amount": {"neq": "NaN"}}, {"amount": 1}, True),
    ({"amount": 1}, {"amount": "NaN"}, False), ({"amount": 1}, {"amount": "nan"}, False),
    # floats
    ({"ratio": 0.1}, {"ratio": Decimal("0.1")}, True),
    ({"ratio": {"lt": 0.30000000000000004}}, {"ratio": Decimal("0.3")}, True),
    ({"ratio": 0}, {"ratio": 0}, True),  # -0 is written as 0
    ({"ratio": "-0"}, {"ratio": Decimal("0")}, True),
    ({"ratio": {"gt": 1e308}}, {"ratio": "Infinity"}, True),
    ({"ratio": "NaN"}, {"ratio": "NaN"}, True), ({"ratio": {"lt": "NaN"}}, {"ratio": "Infinity"},
                                                 True),
    ({"weight": 0.1}, {"weight": Decimal("0.1")}, True),  # both rounded to single precision
    ({"weight": {"lt": 0.1}}, {"weight": Decimal("0.099999994")}, True),
    ({"weight": 16777217}, {"weight": 16777216}, True),
    ({"weight": {"gt": 1}}, {"weight": Decimal("1e39")}, False),  # not a real
    # text: code point (= UTF-8 byte) order, case-sensitive
    ({"name": {"lt": "a"}}, {"name": "B"}, True), ({"name": {"lt": "a"}}, {"name": "b"}, False),
    ({"name": {"gt": "z"}}, {"name": "é"}, True),
    ({"name": {"gt": "\uffff"}}, {"name": "😀"}, True),
    ({"name": {"lt": "ab"}}, {"name": "a"}, True), ({"name": "A"}, {"name": "a"}, False),
    ({"code": "ab"}, {"code": "ab "}, False),  # varchar keeps trailing blanks
    ({"tag": "ab"}, {"tag": "ab   "}, True),  # char(n) ignores them
    ({"tag": "ab   "}, {"tag": "ab   "}, True), ({"tag": {"lt": "ab\t"}}, {"tag": "ab   "}, True),
    ({"tag": {"in": ["x", "ab "]}}, {"tag": "ab   "}, True),
    # booleans, enums, uuids
    ({"ok": True}, {"ok": True}, True), ({"ok": {"neq": True}}, {"ok": False}, True),
    ({"ok": True}, {"ok": 1}, False),
    ({"feeling": {"in": ["ok", "happy"]}}, {"feeling": "happy"}, True),
    ({"feeling": "nope"}, {"feeling": "ok"}, False),
    ({"uid": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"},
     {"uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}, True),
    ({"uid": {"lt": "b0000000-0000-0000-0000-000000000000"}},
     {"uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}, True),
    # timestamps with time zone: instants, whatever the offsets
    ({"at": "2026-01-02T03:04:05Z"}, {"at": "2026-01-02T08:34:05+05:30"}, True),
    ({"at": "2026-01-02T03:04:05"}, {"at": "2026-01-02T03:04:05+00:00"}, True),
    ({"at": {"gt": "2026-01-02T03:04:05Z"}}, {"at": "2026-01-02T03:04:05.000001+00:00"}, True),
    # (local mean time in St. John's: 1 BC, Dec 31 20:29:08 at -03:30:52 is AD 1 in UTC)
    ({"at": "0001-01-01T00:00:00Z"}, {"at": "0001-12-31T20:29:08-03:30:52 BC"}, True),
    ({"at": {"lt": "0001-01-01T00:00:00Z"}}, {"at": "0001-12-31T20:29:07-03:30:52 BC"}, True),
    ({"at": {"lt": "0001-01-01T00:00:00Z"}}, {"at": "0044-03-15T08:29:08-03:30:52 BC"}, True),
    ({"at": "0001-01-01T00:00:00Z"}, {"at": "0001-01-01T05:53:28+05:53:28"}, True),
    ({"at": {"gt": "9999-12-31T23:59:59Z"}}, {"at": "294277-01-01T05:29:59.999999+05:30"},
     True),
    ({"at": {"gt": "9999-12-31T23:59:59Z"}}, {"at": "infinity"}, True),
    ({"at": {"lt": "0001-01-01T00:00:00Z"}}, {"at": "-infinity"}, True),
    ({"at": "infinity"}, {"at": "infinity"}, True), ({"at": "infinity"}, {"at": "-infinity"},
                                                     False),
    ({"at": {"gte": datetime(2026, 1, 2, 5, tzinfo=timezone(timedelta(hours=2)))}},
     {"at": "2026-01-02T03:00:00+00:00"}, True),
    # timestamps without time zone: wall clock
    ({"local": "2026-01-02T03:04:05.5"}, {"local": "2026-01-02T03:04:05.5"}, True),
    ({"local": {"lt": "0001-01-01T00:00:00"}}, {"local": "4713-01-01T00:00:00 BC"}, True),
    ({"local": {"gt": "2026-01-02T03:04:05"}}, {"local": "2026-01-02T03:04:05.000001"}, True),
    # dates
    ({"day": {"gte": "2026-03-01"}}, {"day": "2026-03-01"}, True),
    ({"day": {"lt": "0001-01-01"}}, {"day": "0044-03-15 BC"}, True),
    ({"day": {"gt": "9999-12-31"}}, {"day": "5874897-12-31"}, True),
    ({"day": {"lt": "1970-01-01"}}, {"day": "-infinity"}, True),
    ({"day": "2026-01-02"}, {"day": "garbage"}, False),
    # json null and SQL NULL look alike in the event: is_null tests both
    ({"doc": {"is_null": True}}, {"doc": None}, True),
    ({"doc": {"is_null": False}}, {"doc": {}}, True),
    ({"point": {"is_null": False}}, {"point": {"x": None}}, True),
])
def test_evaluate(raw: Any, row: dict[str, Any], expected: bool) -> None:
    assert matches(raw, row) is expected


def test_and_or_nesting() -> None:
    raw = {"id": {"gt": 0}, "any": [{"name": "a"}, {"ok": True, "any": [
        {"day": "2026-01-01"}, {"uid": {"is_null": True}}]}]}
    assert matches(raw, {"id": 1, "name": "a"})
    assert not matches(raw, {"id": 0, "name": "a"})
    assert not matches(raw, {"id": 1, "name": "b", "ok": True, "day": "2026-01-02",
                             "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"})
    assert matches(raw, {"id": 1, "name": "b", "ok": True, "day": "2026-01-02"})
    assert not matches(raw, {"id": 1, "name": None, "ok": None})


def test_evaluate_refuses_a_comparison_it_cannot_make() -> None:
    with pytest.raises(ValueError, match="cannot be compared"):
        evaluate(Filter((Condition("doc", "eq", "x"),)), {"doc": "x"}, TYPES)


# --------------------------------------------------------------------------- to_sql


def sql(raw: Any, ref: str = "NEW") -> str:
    return to_sql(bound(raw), ref, TYPES)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"id": 5}, """coalesce(NEW."id" = '5'::integer, false)"""),
    ({"big": {"neq": -5}}, """coalesce(NEW."big" <> '-5'::bigint, false)"""),
    ({"amount": {"gte": "99.99", "lt": "1e3"}},
     """coalesce(NEW."amount" >= '99.99'::numeric, false) AND """
     """coalesce(NEW."amount" < '1E+3'::numeric, false)"""),
    ({"amount": "NaN"}, """coalesce(NEW."amount" = 'NaN'::numeric, false)"""),
    ({"ratio": {"lte": 0.1}}, """coalesce(NEW."ratio" <= '0.1'::double precision, false)"""),
    ({"ratio": {"gt": "-inf"}}, """coalesce(NEW."ratio" > '-Infinity'::double precision, false)"""),
    ({"weight": 0.1}, """coalesce(NEW."weight" = '0.10000000149011612'::real, false)"""),
    ({"name": "O'Brien"}, """coalesce(NEW."name" COLLATE "C" = 'O''Brien'::text, false)"""),
    ({"name": {"lt": "a\\b'"}},
     """coalesce(NEW."name" COLLATE "C" < E'a\\\\b'''::text, false)"""),
    ({"code": {"in": ["a", "b"]}},
     """coalesce(NEW."code" COLLATE "C" IN ('a'::text, 'b'::text), false)"""),
    ({"tag": {"not_in": ["ab"]}},
     """coalesce(NEW."tag" COLLATE "C" NOT IN ('ab'::bpchar), false)"""),
    ({"feeling": "ok"}, """coalesce(NEW."feeling"::text COLLATE "C" = 'ok'::text, false)"""),
    ({"ok": False}, """coalesce(NEW."ok" = false, false)"""),
    ({"uid": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"},
     """coalesce(NEW."uid" = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, false)"""),
    ({"at": {"lt": "2026-01-02T03:04:05.5+05:30"}},
     """coalesce(NEW."at" < '2026-01-02T03:04:05.500000+05:30'::timestamp with time zone, """
     "false)"),
    ({"at": "2026-01-02"},
     """coalesce(NEW."at" = '2026-01-02T00:00:00+00:00'::timestamp with time zone, false)"""),
    ({"at": {"gte": "-infinity"}},
     """coalesce(NEW."at" >= '-infinity'::timestamp with time zone, false)"""),
    ({"local": "2026-01-02 03:04"},
     """coalesce(NEW."local" = '2026-01-02T03:04:00'::timestamp without time zone, false)"""),
    ({"day": {"gt": "2026-01-02"}}, """coalesce(NEW."day" > '2026-01-02'::date, false)"""),
    ({"id": {"is_null": True}}, 'NEW."id" IS NULL'),
    ({"ids": {"is_null": False}}, 'NEW."ids" IS NOT NULL'),
    ({"doc": {"is_null": True}},
     """(NEW."doc" IS NULL OR pg_catalog.jsonb_typeof(NEW."doc") = 'null')"""),
    ({"raw": {"is_null": False}},
     """NOT (NEW."raw" IS NULL OR pg_catalog.json_typeof(NEW."raw") = 'null')"""),
    ({"point": {"is_null": True}}, 'pg_catalog.num_nulls(NEW."point") = 1'),
    ({'we"ird': "x"}, """coalesce(NEW."we""ird" COLLATE "C" = 'x'::text, false)"""),
])
def test_sql_of_each_condition(raw: Any, expected: str) -> None:
    assert sql(raw) == expected


def test_sql_of_and_or() -> None:
    assert sql({"id": 1, "any": [{"ok": True}, {"name": "a", "day": {"is_null": True}}]},
               "OLD") == (
        """coalesce(OLD."id" = '1'::integer, false) AND ((coalesce(OLD."ok" = true, false)) OR """
        """(coalesce(OLD."name" COLLATE "C" = 'a'::text, false) AND OLD."day" IS NULL))""")
    assert sql({"any": [{"id": 1}, {"id": 2}]}, "r") == (
        """((coalesce(r."id" = '1'::integer, false)) OR (coalesce(r."id" = '2'::integer, """
        "false)))")


def test_sql_refuses_what_it_cannot_write_safely() -> None:
    with pytest.raises(ValueError, match="plain name"):
        to_sql(Filter(), "NEW; DROP TABLE x", TYPES)
    with pytest.raises(ValueError, match="NUL"):
        to_sql(Filter((Condition("name", "eq", "a\x00"),)), "NEW", TYPES)
    with pytest.raises(ValueError, match="bind the filter"):
        to_sql(Filter((Condition("amount", "eq", "1; DROP TABLE x"),)), "NEW", TYPES)
    with pytest.raises(ValueError, match="bind the filter"):
        to_sql(Filter((Condition("uid", "eq", "x'::uuid OR true OR ''='"),)), "NEW", TYPES)
    with pytest.raises(ValueError, match="bind the filter"):
        to_sql(Filter((Condition("nope", "eq", 1),)), "NEW", TYPES)
    with pytest.raises(ValueError, match="is_null"):
        to_sql(Filter((Condition("doc", "eq", "x"),)), "NEW", TYPES)
    with pytest.raises(ValueError, match="does not apply"):
        to_sql(Filter((Condition("ok", "lt", True),)), "NEW", TYPES)


def test_hostile_names_and_values_stay_inside_their_quotes() -> None:
    types = {'a"; DROP TABLE t; --': "text"}
    f = bound({'a"; DROP TABLE t; --': "'); DROP TABLE t; --"}, types)
    assert to_sql(f, "NEW", types) == (
        """coalesce(NEW."a""; DROP TABLE t; --" COLLATE "C" = '''); DROP TABLE t; --'::text, """
        "false)")


# --------------------------------------------------------------------------- parse_compact


@pytest.mark.parametrize(("text", "query"), [
    ("insert:users:id.eq.5",
     CompactQuery(frozenset({"insert"}), "public.users", Filter((Condition("id", "eq", "5"),)))),
    ("*:orders:amount.gte.100",
     CompactQuery(frozenset({"insert", "update", "delete", "truncate"}), "public.orders",
                  Filter((Condition("amount", "gte", "100"),)))),
    ("update:public.users:status.in.(active,pending)",
     CompactQuery(frozenset({"update"}), "public.users",
                  Filter((Condition("status", "in", ("active", "pending")),)))),
    ("delete:users", CompactQuery(frozenset({"delete"}), "public.users", None)),
    ("insert|update:app.users:deleted_at.is_null.true,age.lt.18,name.neq.a.b:c",
     CompactQuery(frozenset({"insert", "update"}), "app.users", Filter((
         Condition("deleted_at", "is_null", True), Condition("age", "lt", "18"),
         Condition("name", "neq", "a.b:c"))))),
    ('*:"My Schema"."a:b""c":"any".eq."x, ""y""",n.not_in.("a,b",c,""),at.gte.2026-01-02T03:04Z',
     CompactQuery(frozenset({"insert", "update", "delete", "truncate"}),
                  '"My Schema"."a:b""c"', Filter((
                      Condition("any", "eq", 'x, "y"'), Condition("n", "not_in", ("a,b", "c", "")),
                      Condition("at", "gte", "2026-01-02T03:04Z"))))),
    ("delete:t:x.is_null.false,y.lte.-1", CompactQuery(frozenset({"delete"}), "public.t", Filter((
        Condition("x", "is_null", False), Condition("y", "lte", "-1"))))),
    ("insert:t:é.eq.ü", CompactQuery(frozenset({"insert"}), "public.t",
                                     Filter((Condition("é", "eq", "ü"),)))),
])
def test_compact_queries(text: str, query: CompactQuery) -> None:
    assert parse_compact(text) == query


@pytest.mark.parametrize(("text", "message"), [
    ("insert", "expected ':' after the operations, found the end at position 6"),
    ("users", "unknown operation 'users' (expected insert, update, delete, truncate joined by "
     "'|', or *) at position 0"),
    ("upsert:users", "unknown operation 'upsert' (expected insert, update, delete, truncate "
     "joined by '|', or *) at position 0"),
    ("insert|*:users", "unknown operation '*'"),
    ("insert:", "invalid table: empty name at position 7"),
    ("insert:a.b.c", "invalid table: expected schema.table or table at position 7"),
    ('insert:"users', "unterminated double quote at position 7"),
    ("insert:users:", "expected a column name at position 13"),
    ("insert:users:id", "expected '.' after the column 'id', found the end at position 15"),
    ("insert:users:id.eqq.5", "unknown operator 'eqq' (expected eq, neq, lt, lte, gt, gte, in, "
     "not_in, is_null) at position 16"),
    ("insert:users:id.eq", "expected '.' after the operator 'eq', found the end"),
    ("insert:users:id.eq.", 'expected a value (write "" for an empty string) at position 19'),
    ("insert:users:id.eq.5,", "expected a column name at position 21"),
    ("insert:users:id.eq.5,,x.eq.1", "expected a column name at position 21"),
    ("insert:users:any.eq.5", "'any' is reserved: quote a column named any (\"any\") at "
     "position 13"),
    ("insert:users:x.is_null.yes", "is_null takes true or false, got 'yes' at position 23"),
    ("insert:users:x.in.a", "in takes a list: (in.(a,b,c)) at position 18"),
    ("insert:users:x.in.()", 'expected a value (write "" for an empty string) at position 19'),
    ("insert:users:x.in.(a,b", "expected ')' to close the list, found the end at position 22"),
    ("insert:users:x.in.(a)b", "expected ',' between conditions, found 'b' at position 21"),
    ("insert:users:x.eq.(a)", "eq takes a single value; a list is for in and not_in"),
    ('insert:users:x.eq."a"b', "expected ',' between conditions, found 'b' at position 21"),
    ('insert:users:x.eq.a"b', 'a double quote may only start a quoted value ("…") at position 19'),
    ('insert:users:x.eq."a', "unterminated double quote at position 18"),
])
def test_compact_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_compact(text)
    assert message in str(err.value)
    assert repr(text) in str(err.value)


def test_compact_values_are_bound_like_config_values() -> None:
    query = parse_compact("*:t:id.in.(1,2),at.gte.2026-01-02T00:00:00+01:00,ok.eq.true,"
                          "uid.is_null.false")
    assert query.filter is not None
    f, problems = bind_types(query.filter, TYPES, "query")
    assert f is not None, problems
    assert evaluate(f, {"id": 2, "at": "2026-01-01T23:00:00+00:00", "ok": True,
                        "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}, TYPES)
    assert not evaluate(f, {"id": 3, "at": "2026-01-01T23:00:00+00:00", "ok": True,
                            "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}, TYPES)
    bad = parse_compact("*:t:id.gte.abc").filter
    assert bad is not None
    assert bind_types(bad, TYPES, "query") == (
        None, ["query.id.gte: expected an integer for column id (integer), got 'abc'"])
