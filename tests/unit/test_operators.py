"""Operators without a database (connector/operators.py): the per-batch plan, the loop check,
how keys bind to ``$1``, and the ``operators:`` section of the config. What they do on real
PostgreSQL is tests/integration/test_operators.py; the CLI, tests/e2e/test_operators_cli.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from connector.config import from_dict
from connector.operators import Step, converter, loops, operator_routes, plan, with_operators
from connector.vocabulary import (
    OPERATOR_RETRY,
    ChangeEvent,
    ConfigError,
    Message,
    OperatorConfig,
    RetryConfig,
    TableName,
    parse_table,
)

POSTS, COMMENTS = "public.posts", "public.comments"

# EventStreamex's example: a post's row in post_with_comments_counts, recounted per post id.
COUNTS = {"name": "post_with_comments_counts",
          "tables": {POSTS: "id", COMMENTS: "post_id"},
          "sql": "SELECT $1", "delete_with": [POSTS],
          "target": {"table": "public.post_with_comments_counts", "key": "id"}}


def operator(**changes: Any) -> OperatorConfig:
    """The counts operator as the config makes it, with ``changes`` to its fields."""
    op = from_dict({"operators": [COUNTS]}).operators[0]
    return dataclasses.replace(op, **changes)


def message(position: int, table: str, op: str, new: Mapping[str, Any] | None = None,
            old: Mapping[str, Any] | None = None) -> Message:
    """A change as the router hands it to an operator's sink (the payload as a reader makes
    it, as connector/testing.py's event(); a truncate has neither row)."""
    t = parse_table(table)
    data = {"id": str(position), "op": op, "schema": t.schema, "table": t.name,
            "new": dict(new) if new is not None else None,
            "old": dict(old) if old is not None else None}
    payload = orjson.dumps(data)
    event = ChangeEvent(position, t.schema, t.name, op, payload, ("id",), str(position))
    return Message("operator:post_with_comments_counts", f"{t.schema}.{t.name}",
                   f"{t.schema}.{t.name}", payload, event)


def comment(position: int, post_id: Any, op: str = "insert", *, old_post_id: Any = None,
            cid: int = 100) -> Message:
    """A comment change: ``post_id`` in the new row, ``old_post_id`` in the old one."""
    new = None if op == "delete" else {"id": cid, "post_id": post_id, "body": "b"}
    old = None if op == "insert" else {"id": cid, "post_id": old_post_id, "body": "b"}
    return message(position, COMMENTS, op, new, old)


def post(position: int, post_id: int, op: str = "insert", *, old_id: int | None = None
         ) -> Message:
    new = None if op == "delete" else {"id": post_id, "title": "t"}
    old = None if op == "insert" else {"id": post_id if old_id is None else old_id,
                                        "title": "t"}
    return message(position, POSTS, op, new, old)


def truncate(position: int, table: str = POSTS) -> Message:
    return message(position, table, "truncate")


def sql(key: Any, *indexes: int) -> Step:
    return Step("sql", key, indexes)


def delete(key: Any, *indexes: int) -> Step:
    return Step("delete", key, indexes)


def unit(*steps: Step) -> tuple[list[Step], frozenset[int]]:
    return list(steps), frozenset(i for s in steps for i in s.indexes)


# ---------------------------------------------------------------------------- plan()


def test_coalescing_runs_each_key_once_after_its_last_change() -> None:
    messages = [comment(0, 1), comment(1, 2, cid=101), post(2, 1, "update"),
                comment(3, 2, cid=102)]
    assert plan(operator(), messages) == [unit(sql(1, 0, 2)), unit(sql(2, 1, 3))]


def test_coalesced_keys_are_ordered_by_their_last_change_not_their_first() -> None:
    messages = [comment(0, 1), comment(1, 2, cid=101), comment(2, 1, cid=102),
                comment(3, 3, cid=103)]
    assert plan(operator(), messages) == [
        unit(sql(2, 1)), unit(sql(1, 0, 2)), unit(sql(3, 3))]


def test_a_key_move_runs_for_the_old_key_and_the_new_one() -> None:
    # A comment moving from post 1 to post 2 recounts both, the old one first.
    moved = comment(0, 2, "update", old_post_id=1)
    assert plan(operator(), [moved]) == [unit(sql(1, 0), sql(2, 0))]
    # An update that keeps the key runs it once.
    assert plan(operator(), [comment(0, 1, "update", old_post_id=1)]) == [unit(sql(1, 0))]


def test_a_key_move_in_a_delete_with_table_deletes_the_old_keys_row() -> None:
    # posts is in delete_with: the post that was 1 is gone, so its row of the target goes.
    assert plan(operator(), [post(0, 2, "update", old_id=1)]) == [
        unit(delete(1, 0), sql(2, 0))]
    # Without delete_with the old key is recomputed instead.
    assert plan(operator(delete_with=frozenset()), [post(0, 2, "update", old_id=1)]) == [
        unit(sql(1, 0), sql(2, 0))]


def test_a_delete_of_a_delete_with_table_deletes_the_targets_row() -> None:
    assert plan(operator(), [post(0, 2, "delete")]) == [unit(delete(2, 0))]
    # A comment's delete (comments is not in delete_with) recounts its post.
    assert plan(operator(), [comment(0, None, "delete", old_post_id=2)]) == [
        unit(sql(2, 0))]
    # The last change wins: changed, then deleted -> only the delete.
    assert plan(operator(), [comment(0, 2), post(1, 2, "update"), post(2, 2, "delete")]) == [
        unit(delete(2, 0, 1, 2))]


def test_deleted_then_re_created_in_one_batch_deletes_then_recomputes() -> None:
    messages = [post(0, 2, "delete"), comment(1, 5), post(2, 2), comment(3, 2, cid=101)]
    assert plan(operator(), messages) == [
        unit(sql(5, 1)), unit(delete(2, 0, 2, 3), sql(2, 0, 2, 3))]


def test_without_coalesce_every_change_is_a_unit_of_its_own_in_order() -> None:
    op = operator(coalesce=False)
    messages = [comment(0, 1), comment(1, 1, cid=101), comment(2, 2, "update", old_post_id=1),
                post(3, 2, "delete"), post(4, 2), comment(5, 1, cid=102)]
    assert plan(op, messages) == [
        unit(sql(1, 0)), unit(sql(1, 1)), unit(sql(1, 2), sql(2, 2)), unit(delete(2, 3)),
        unit(sql(2, 4)), unit(sql(1, 5))]


def test_a_truncate_rebuilds_and_covers_the_changes_before_it() -> None:
    messages = [comment(0, 1), comment(1, 2, cid=101), truncate(2), post(3, 3),
                comment(4, 1, cid=102), post(5, 3, "update")]
    assert plan(operator(), messages) == [
        ([Step("rebuild", None, (0, 1, 2))], frozenset({0, 1, 2})),
        unit(sql(1, 4)), unit(sql(3, 3, 5))]
    # Without coalesce, the changes after it run one by one.
    assert plan(operator(coalesce=False), messages) == [
        ([Step("rebuild", None, (0, 1, 2))], frozenset({0, 1, 2})),
        unit(sql(3, 3)), unit(sql(1, 4)), unit(sql(3, 5))]


def test_the_last_truncate_rebuilds_for_everything_before_it() -> None:
    messages = [truncate(0, COMMENTS), comment(1, 1), truncate(2), comment(3, 4)]
    assert plan(operator(), messages) == [
        ([Step("rebuild", None, (0, 1, 2))], frozenset({0, 1, 2})), unit(sql(4, 3))]
    assert plan(operator(), [comment(0, 1), truncate(1)]) == [
        ([Step("rebuild", None, (0, 1))], frozenset({0, 1}))]


def test_null_and_missing_keys_are_skipped() -> None:
    messages = [comment(0, None),  # a comment of no post
                comment(1, None, "update", old_post_id=3),  # left post 3: recount 3 only
                message(2, COMMENTS, "delete", old={"id": 7}),  # old row without post_id
                message(3, "public.other", "insert", {"id": 1}),  # not one of its tables
                comment(4, 4, cid=101)]
    assert plan(operator(), messages) == [unit(sql(3, 1)), unit(sql(4, 4))]
    assert plan(operator(coalesce=False), messages) == [unit(sql(3, 1)), unit(sql(4, 4))]
    assert plan(operator(), []) == []
    assert plan(operator(), [comment(0, None)]) == []


def test_keys_linked_by_one_change_form_one_unit() -> None:
    """A unit succeeds or fails together: keys one change touches (a move), and transitively
    what later changes link to them. Steps within it keep last-change order."""
    messages = [comment(0, 2, "update", old_post_id=1),  # links 1 and 2
                comment(1, 3, cid=101),  # 3 alone
                comment(2, 4, "update", old_post_id=2, cid=102),  # links 2 and 4, so 1 too
                comment(3, 1, cid=103)]
    assert plan(operator(), messages) == [
        unit(sql(3, 1)), unit(sql(2, 0, 2), sql(4, 2), sql(1, 0, 3))]


def test_composite_key_values_coalesce_by_their_json() -> None:
    op = operator(tables={TableName("public", "docs"): "ref"}, delete_with=frozenset())
    messages = [message(0, "public.docs", "insert", {"id": 1, "ref": {"a": 1, "b": 2}}),
                message(1, "public.docs", "insert", {"id": 2, "ref": {"b": 2, "a": 1}})]
    assert plan(op, messages) == [unit(sql('{"a":1,"b":2}', 0, 1))]


def test_a_numeric_key_binds_exactly() -> None:
    # The payload as the trigger reader writes it (to_jsonb of a numeric: a JSON number).
    payload = (b'{"id":"0","op":"insert","schema":"public","table":"prices",'
               b'"new":{"id":12345678901234.567},"old":null}')
    event = ChangeEvent(0, "public", "prices", "insert", payload, ("id",), "0")
    op = operator(tables={TableName("public", "prices"): "id"}, delete_with=frozenset())
    [(steps, _)] = plan(op, [Message("operator:p", "c", "c", payload, event)])
    convert = converter("numeric")
    assert convert is not None
    assert convert(steps[0].key) == decimal.Decimal("12345678901234.567")


# ---------------------------------------------------------------------------- loops()


def op_on(name: str, index: int, *tables: str) -> OperatorConfig:
    return OperatorConfig(name=name, tables={parse_table(t): "id" for t in tables}, sql="x",
                          path=f"operators[{index}]")


def test_an_operator_writing_its_own_table_is_a_loop() -> None:
    ops = [op_on("self", 0, "public.a")]
    assert loops(ops, {"self": [parse_table("public.a")]}) == [
        "operators[0].tables: self writes public.a, one of this operator's own tables: a loop "
        "(each change would trigger another)"]


def test_two_operators_feeding_each_other_are_a_loop_for_each() -> None:
    ops = [op_on("a_to_b", 0, "public.a"), op_on("b_to_a", 1, "public.b")]
    writes = {"a_to_b": [parse_table("public.b")], "b_to_a": [parse_table("public.a")]}
    assert loops(ops, writes) == [
        "operators[0].tables: a_to_b -> b_to_a writes public.a, one of this operator's own "
        "tables: a loop (each change would trigger another)",
        "operators[1].tables: b_to_a -> a_to_b writes public.b, one of this operator's own "
        "tables: a loop (each change would trigger another)"]


def test_a_chain_without_a_loop_passes() -> None:
    # a -> b -> c -> d: each derived from the one before, nothing back.
    ops = [op_on("first", 0, "public.a"), op_on("second", 1, "public.b"),
           op_on("third", 2, "public.c", "public.a")]
    writes = {"first": [parse_table("public.b")], "second": [parse_table("public.c")],
              "third": [parse_table("public.d")]}
    assert loops(ops, writes) == []
    assert loops(ops, {}) == []  # (an operator writing nothing known)
    assert loops([], {}) == []


# ---------------------------------------------------------------------------- converter()


@pytest.mark.parametrize(("type_name", "value", "expected"), [
    ("int4", 7, 7),
    ("int8", 9_007_199_254_740_993, 9_007_199_254_740_993),
    ("int2", 3, 3),
    ("numeric", 1.5, decimal.Decimal("1.5")),
    ("numeric", 12, decimal.Decimal(12)),
    ("text", 12, "12"),  # an int column feeding a text $1
    ("text", "abc", "abc"),
    ("varchar", "abc", "abc"),
    ("uuid", "0b7e3c1a-2f4d-4c6e-9a8b-1d2e3f405162",
     uuid.UUID("0b7e3c1a-2f4d-4c6e-9a8b-1d2e3f405162")),
    ("date", "2024-02-29", dt.date(2024, 2, 29)),
    ("timestamptz", "2024-01-02T03:04:05.12+05:30",
     dt.datetime(2024, 1, 2, 3, 4, 5, 120000,
                 tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))),
    ("timestamp", "2024-01-02T03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5)),
    ("bool", True, True),
])
def test_a_key_converts_to_what_its_parameter_binds(type_name: str, value: Any,
                                                    expected: Any) -> None:
    convert = converter(type_name)
    assert convert is not None
    got = convert(value)
    assert got == expected
    assert type(got) is type(expected)


def test_an_unsupported_key_type_has_no_converter() -> None:
    for type_name in ("point", "jsonb", "int4[]", "interval"):
        assert converter(type_name) is None
    # A Python operator (no $1): keys stay as the event has them.
    keep = converter(None)
    assert keep is not None
    assert keep({"a": 1}) == {"a": 1}


# ---------------------------------------------------------------------------- config


def operators_config(*operators: Mapping[str, Any], **extra: Any) -> Any:
    return from_dict({"operators": [dict(o) for o in operators], **extra})


def problems(*operators: Mapping[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        operators_config(*operators)
    return caught.value.problems


def without(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def test_a_valid_operator_and_its_defaults() -> None:
    config = operators_config(COUNTS)
    [op] = config.operators
    assert op.name == "post_with_comments_counts"
    assert op.sink == "operator:post_with_comments_counts"
    assert op.tables == {TableName("public", "posts"): "id",
                         TableName("public", "comments"): "post_id"}
    assert op.sql == "SELECT $1" and op.function is None
    assert op.delete_with == {TableName("public", "posts")}
    assert (op.target, op.target_key) == (TableName("public", "post_with_comments_counts"), "id")
    assert op.operations == {"insert", "update", "delete"}
    assert op.on_truncate == "rebuild" and op.coalesce is True and op.rebuild_sql is None
    assert op.retry == OPERATOR_RETRY == RetryConfig(max_attempts=10)
    assert op.path == "operators[0]"
    # Nothing else is needed: an operator is something to capture.
    assert config.routes == () and config.publishers == {}


def test_bare_table_names_are_public() -> None:
    [op] = operators_config({**COUNTS, "tables": {"posts": "id", "comments": "post_id"},
                             "delete_with": ["posts"],
                             "target": {"table": "post_with_comments_counts", "key": "id"}}
                            ).operators
    assert set(op.tables) == {TableName("public", "posts"), TableName("public", "comments")}
    assert op.delete_with == {TableName("public", "posts")}
    assert op.target == TableName("public", "post_with_comments_counts")


def test_the_routes_an_operator_adds() -> None:
    config = operators_config(COUNTS, publishers={"c": {"type": "stdout"}},
                              routes=[{"table": "public.posts", "publisher": "c",
                                       "channel": "x"}])
    full = with_operators(config)
    assert full.routes[0] == config.routes[0]
    added = full.routes[1:]
    # one per table (sorted), whole events, truncates too (on_truncate: rebuild)
    assert [(r.index, str(r.table), r.publisher, r.channel.source, r.path) for r in added] == [
        (1, "public.comments", "operator:post_with_comments_counts", "{schema}.{table}",
         "operators[0].tables"),
        (2, "public.posts", "operator:post_with_comments_counts", "{schema}.{table}",
         "operators[0].tables")]
    assert all(r.operations == {"insert", "update", "delete", "truncate"} for r in added)
    assert set(full.tables) == {TableName("public", "posts"), TableName("public", "comments")}
    # on_truncate: ignore -> no truncate routed; operations narrow what is.
    [op] = operators_config({**COUNTS, "on_truncate": "ignore",
                             "operations": ["insert"]}).operators
    assert [r.operations for r in operator_routes(op, 5)] == [{"insert"}, {"insert"}]
    assert [r.index for r in operator_routes(op, 5)] == [5, 6]


@pytest.mark.parametrize("data", [
    {**COUNTS, "call": "asyncio:sleep"},  # both (an async function, so only that is wrong)
    without(COUNTS, "sql"),  # neither
], ids=["both", "neither"])
def test_sql_or_call_one_of_them(data: dict[str, Any]) -> None:
    assert problems(data) == ["operators[0]: give sql or call (a Python operator), one of them"]


def test_a_python_operator_must_be_async() -> None:
    assert problems({**without(COUNTS, "sql"), "call": "json:dumps"}) == [
        "operators[0].call: a Python operator is an async def f(tx, key, events) (it runs on "
        "the transaction's connection, on the event loop)"]
    [op] = operators_config({**without(COUNTS, "sql"), "call": "asyncio:sleep"}).operators
    assert op.sql is None and op.call == "asyncio:sleep" and callable(op.function)


def test_delete_with_needs_a_target() -> None:
    assert problems(without(COUNTS, "target")) == [
        "operators[0].delete_with: needs target (the table and key column whose row a delete "
        "removes)"]


def test_delete_with_names_one_of_the_operators_tables() -> None:
    assert problems({**COUNTS, "delete_with": ["public.posts", "public.users"]}) == [
        "operators[0].delete_with[1]: public.users is not among the operator's tables"]


def test_operator_names_are_unique() -> None:
    assert problems(COUNTS, {**COUNTS, "tables": {"public.likes": "post_id"},
                             "delete_with": ["public.likes"]}) == [
        "operators[1].name: 'post_with_comments_counts' is used by an earlier operator"]


def test_a_loop_through_declared_targets_is_caught_offline() -> None:
    to_b = {"name": "a_to_b", "tables": {"public.a": "id"}, "sql": "S",
            "target": {"table": "public.b", "key": "id"}}
    to_a = {"name": "b_to_a", "tables": {"public.b": "id"}, "sql": "S",
            "target": {"table": "a", "key": "id"}}
    assert problems(to_b, to_a) == [
        "operators[0].tables: a_to_b -> b_to_a writes public.a, one of this operator's own "
        "tables: a loop (each change would trigger another)",
        "operators[1].tables: b_to_a -> a_to_b writes public.b, one of this operator's own "
        "tables: a loop (each change would trigger another)"]
    own = {**to_b, "target": {"table": "public.a", "key": "id"}}
    assert problems(own) == [
        "operators[0].tables: a_to_b writes public.a, one of this operator's own tables: a "
        "loop (each change would trigger another)"]


@pytest.mark.parametrize(("data", "expected"), [
    ({**COUNTS, "bogus": 1}, "operators[0]: unknown key 'bogus'"),
    ({**COUNTS, "target": {"table": "t", "key": "id", "extra": 1}},
     "operators[0].target: unknown key 'extra'"),
    ({**COUNTS, "name": "bad name"},
     "operators[0].name: use letters, digits, '_' and '-', starting with a letter or '_'"),
    ({**COUNTS, "on_truncate": "drop"},
     "operators[0].on_truncate: 'drop' is not one of rebuild, ignore"),
    ({**COUNTS, "delete_with": None},
     "operators[0].delete_with: expected array, got null"),
    ({**without(COUNTS, "delete_with"), "tables": {"a.b.c": "id"}},
     'operators[0].tables["a.b.c"]: expected schema.table or table: \'a.b.c\''),
    ({**COUNTS, "tables": {"public.posts": "id", "posts": "id"}},
     "operators[0].tables.posts: public.posts is listed twice"),
], ids=["unknown-key", "target-unknown-key", "name", "on_truncate", "delete_with-null",
        "bad-table", "table-twice"])
def test_schema_and_table_problems(data: dict[str, Any], expected: str) -> None:
    assert problems(data) == [expected]


def test_retry_keeps_the_operator_default_max_attempts() -> None:
    [op] = operators_config({**COUNTS, "retry": {"initial_backoff": 0.2}}).operators
    assert op.retry == RetryConfig(max_attempts=10, initial_backoff=0.2)
    [op] = operators_config({**COUNTS, "retry": {"max_attempts": 3}}).operators
    assert op.retry.max_attempts == 3 and op.retry.initial_backoff == 0.5


class Statements:
    """An Executor that records what an operator sends (the batching shape, without a
    server: what the statements do is tests/integration/test_operators.py's)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def execute(self, sql: str, *args: Any, long: bool = False) -> str:
        self.sent.append((sql.split()[0], args))
        return ""

    async def executemany(self, sql: str, args: Any, *, long: bool = False) -> None:
        self.sent.append((sql.split()[0], [a[0] for a in args]))

    async def fetch(self, sql: str, *args: Any, long: bool = False) -> list[Any]:
        raise AssertionError("not used")

    fetchrow = fetchval = fetch


async def test_a_batch_runs_as_one_executemany_per_run_of_steps() -> None:
    from connector.operators import OperatorBinding, OperatorSink

    op = operator(sql="MERGE $1")
    sink = OperatorSink(op, OperatorBinding("int4", "SELECT lock($1)", "s/o",
                                            delete_sql="DELETE $1", delete_type="int4"))
    tx = Statements()
    await sink.publish_in(tx, [post(0, 1), comment(1, 2), comment(2, 3), post(3, 4, "delete"),
                               comment(4, 1)])
    assert tx.sent == [("SELECT", ("s/o",)), ("SAVEPOINT", ()), ("MERGE", [2, 3]),
                       ("DELETE", [4]), ("MERGE", [1]), ("RELEASE", ())]
