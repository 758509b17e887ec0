"""Routes with filters, transitions, column selection, key splits and types, on real tables:
what the triggers write (pushdown) and what the router publishes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from connector import Connector
from connector.config import from_dict as config_from_dict
from connector.store.install import install
from connector.vocabulary import ConfigError
from tests.conftest import RedisSubscriber
from tests.integration.helpers import make_config

ORDERS = """CREATE TABLE orders (
    id serial PRIMARY KEY, status text, amount numeric(12,2), region text,
    deleted_at timestamptz, placed date, note text, views int DEFAULT 0)"""

ROWS = [  # (status, amount, region, deleted_at, placed)
    ("active", 150, "eu", None, "2026-01-10"),
    ("active", 99.99, "eu", None, "2026-01-11"),
    ("active", 100, "us", None, "2026-02-01"),
    ("paused", 500, "eu", None, "2026-03-01"),
    ("active", 700, "apac", None, "2026-03-02"),
    ("active", 300, "us", "2026-01-01T00:00:00Z", "2026-03-03"),
    (None, None, None, None, None),
]


async def insert_rows(pg: asyncpg.Connection) -> None:
    await pg.executemany(
        "INSERT INTO orders (status, amount, region, deleted_at, placed) "
        "VALUES ($1, $2, $3, $4::text::timestamptz, $5::text::date)",
        [(s, None if a is None else Decimal(str(a)), r, d, p) for s, a, r, d, p in ROWS])


def cfg(database: str, redis_url: str, prefix: str, **route: Any) -> dict[str, Any]:
    return make_config(database, redis_url, [
        {"table": "orders", "publisher": "cache", "channel": prefix + ":{op}:{id}", **route}])


async def captured_ids(pg: asyncpg.Connection) -> list[int]:
    """Ids of the rows the triggers wrote to the outbox (no daemon running)."""
    rows = await pg.fetch("SELECT coalesce(new_row, old_row) AS r FROM pgconnector.outbox "
                          "ORDER BY id")
    return [json.loads(r["r"])["id"] for r in rows]


@pytest.mark.parametrize(("where", "expected"), [
    ({"status": "active", "amount": {"gte": 100}, "region": {"in": ["eu", "us"]},
      "deleted_at": {"is_null": True}}, [1, 3]),
    ({"status": {"neq": "active"}}, [4]),  # NULL is not "not equal" (SQL semantics)
    ({"amount": {"lt": 100}}, [2]),
    ({"amount": {"lte": 100}}, [2, 3]),
    ({"amount": {"gt": 500}}, [5]),
    ({"amount": {"gte": 500, "lt": 700}}, [4]),
    ({"region": {"not_in": ["eu"]}}, [3, 5, 6]),
    ({"deleted_at": {"is_null": False}}, [6]),
    ({"status": {"is_null": True}}, [7]),
    ({"placed": {"gte": "2026-03-01"}}, [4, 5, 6]),
    ({"any": [{"region": "apac"}, {"status": "paused"}]}, [4, 5]),
    ({"status": "active", "any": [{"amount": {"lt": 100}}, {"region": "us", "amount": 100}]},
     [2, 3]),
])
async def test_filters_decide_in_the_trigger_and_in_the_router(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber, where: dict[str, Any], expected: list[int]) -> None:
    await pg.execute(ORDERS)
    config = cfg(database, redis_url, channel_prefix, where=where, operations=["insert"])
    await install(pg, config_from_dict(config))
    await insert_rows(pg)
    assert await captured_ids(pg) == expected  # pushdown: only matching changes are written
    await pg.execute("TRUNCATE orders, pgconnector.outbox")
    async with subscriber, Connector(config):
        await insert_rows(pg)
        got = await subscriber.wait_for(len(expected), timeout=5)
    assert [e["new"]["id"] - len(ROWS) for _, e in got] == expected


async def test_transitions_publish_leaving_as_delete_and_entering_as_insert(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    await pg.execute(ORDERS)
    await insert_rows(pg)
    config = cfg(database, redis_url, channel_prefix, where={"status": "active"},
                 operations=["insert", "update", "delete"])
    config["routes"].append({"table": "orders", "publisher": "cache",
                             "channel": channel_prefix + ":plain:{op}", "transitions": False,
                             "where": {"status": "active"}, "operations": ["update"]})
    async with subscriber, Connector(config):
        await pg.execute("UPDATE orders SET status = 'paused' WHERE id = 1")   # leaves
        await pg.execute("UPDATE orders SET status = 'active' WHERE id = 4")   # enters
        await pg.execute("UPDATE orders SET note = 'x' WHERE id = 2")          # stays inside
        await pg.execute("UPDATE orders SET note = 'y' WHERE id = 1")          # stays outside
        got = await subscriber.wait_for(5, timeout=5)
    main = [(c.split(":")[1], e["op"], (e["new"] or e["old"])["id"]) for c, e in got
            if ":plain:" not in c]
    assert main == [("delete", "delete", 1), ("insert", "insert", 4), ("update", "update", 2)]
    left = next(e for c, e in got if c.endswith(":delete:1"))
    assert left["new"] is None and left["old"]["status"] == "active" and "changes" not in left
    plain = [(e["op"], e["new"]["id"]) for c, e in got if ":plain:" in c]
    assert plain == [("update", 4), ("update", 2)]  # transitions off: the new row decides


async def test_column_selection_and_ignore_lists(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    await pg.execute(ORDERS)
    await insert_rows(pg)
    config = make_config(database, redis_url, [
        {"table": "orders", "publisher": "cache", "channel": channel_prefix + ":sel",
         "operations": ["update"], "columns": ["status", "amount"]},
        {"table": "orders", "publisher": "cache", "channel": channel_prefix + ":ign",
         "operations": ["update"], "ignore_columns": ["views", "note"]}])
    await install(pg, config_from_dict(config))
    await pg.execute("UPDATE orders SET views = views + 1, note = 'seen'")  # nobody watches
    assert await captured_ids(pg) == []  # not even written to the outbox
    tgdef = await pg.fetchval("SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                              "WHERE tgname = 'pgconnector_update_v1'")
    assert "UPDATE OF" in tgdef and "WHEN" in tgdef
    async with subscriber, Connector(config):
        await pg.execute("UPDATE orders SET views = 9 WHERE id = 1")             # nothing
        await pg.execute("UPDATE orders SET region = 'us' WHERE id = 1")         # ign only
        await pg.execute("UPDATE orders SET amount = 1, views = 2 WHERE id = 2")  # both
        got = await subscriber.wait_for(3, timeout=5)
    assert [(c.rsplit(":", 1)[1], e["old"]["id"]) for c, e in got] == [
        ("ign", 1), ("sel", 2), ("ign", 2)]
    sel = next(e for c, e in got if c.endswith(":sel"))
    assert set(sel["new"]) == {"id", "status", "amount"}  # the key is always kept
    assert sel["changes"] == {"amount": {"old": 99.99, "new": 1}}
    ign = [e for c, e in got if c.endswith(":ign")][1]
    assert "views" not in ign["new"] and "note" not in ign["new"] and "placed" in ign["new"]


async def test_split_key_change_and_include_types(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    await pg.execute(ORDERS)
    await insert_rows(pg)
    config = cfg(database, redis_url, channel_prefix, split_key_change=True,
                 include_types=True, operations=["update"])
    async with subscriber, Connector(config):
        await pg.execute("UPDATE orders SET id = 100 WHERE id = 1")
        await pg.execute("UPDATE orders SET note = 'n' WHERE id = 2")
        got = await subscriber.wait_for(3, timeout=5)
    (c1, gone), (c2, came), (_, upd) = got
    assert (gone["op"], gone["old"]["id"], gone["new"]) == ("delete", 1, None)
    assert (came["op"], came["new"]["id"], came["old"]) == ("insert", 100, None)
    assert c1.endswith(":delete:1") and c2.endswith(":insert:100")
    assert gone["id"].endswith("/delete") and came["id"] == gone["id"][:-7] + "/insert"
    assert gone["txid"] == came["txid"] != upd["txid"]
    assert upd["op"] == "update" and upd["columns"]["amount"] == "numeric(12,2)"
    assert upd["columns"]["deleted_at"] == "timestamp with time zone"


@pytest.mark.parametrize(("route", "problem"), [
    ({"where": {"amount": {"gtee": 1}}}, "routes[0].where.amount: unknown operator 'gtee'"),
    ({"where": {"region": {"in": "eu"}}}, "routes[0].where.region.in: expected a list"),
])
def test_invalid_filters_fail_validation(route: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(cfg("postgresql://x/y", "redis://127.0.0.1:6379/0", "p", **route))
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


@pytest.mark.parametrize(("route", "problem"), [
    ({"where": {"colour": "red"}}, "routes[0].where.colour: unknown column 'colour'"),
    ({"where": {"amount": {"gte": "lots"}}}, "routes[0].where.amount.gte: expected a number"),
    ({"columns": ["id", "nope"]}, "routes[0].columns[1]: unknown column 'nope' in public.orders"),
    ({"ignore_columns": ["nope"]},
     "routes[0].ignore_columns[0]: unknown column 'nope' in public.orders"),
])
async def test_filters_that_do_not_fit_the_table_fail_install(
        database: str, pg: asyncpg.Connection, route: dict[str, Any], problem: str) -> None:
    await pg.execute(ORDERS)
    config = config_from_dict(cfg(database, "redis://127.0.0.1:6379/0", "p", **route))
    with pytest.raises(ConfigError) as err:
        await install(pg, config)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems
    assert await pg.fetchval("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == 0


TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS numeric(30,10) CHECK (VALUE > 0);
CREATE DOMAIN small_positive AS positive CHECK (VALUE < 100);  -- a domain over a domain
CREATE TABLE kinds (
    region text, seq int,
    tags text[], matrix int[][], doc jsonb, raw json,
    big numeric(40,20), ratio double precision,
    at_tz timestamptz, at_local timestamp, day date,
    blob bytea, feeling mood, price positive, uid uuid, fee small_positive,
    doubled int GENERATED ALWAYS AS (seq * 2) STORED,
    PRIMARY KEY (region, seq))"""

KIND_ROW = """INSERT INTO kinds VALUES (
    'eu', 1, '{a,"b c",NULL}', '{{1,2},{3,4}}', '{"k": [1, {"x": null}], "n": 1.50}',
    '{"keep":  "spacing"}', 12345678901234567890.12345678901234567890, 0.1,
    '2026-01-02 03:04:05.123456+02', '2026-01-02 03:04:05.5', '2026-01-02',
    '\\x00ff10', 'happy', 3.1415926535, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 2.5)"""


@pytest.mark.parametrize("shaped", [False, True], ids=["plain", "filtered"])
async def test_every_type_publishes_faithfully(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber, shaped: bool) -> None:
    """The same event whether the captured JSON passes through (plain route) or is re-read
    and re-written by the router (a filtered, projected route)."""
    await pg.execute(TYPES)
    route: dict[str, Any] = {"table": "kinds", "publisher": "cache",
                             "channel": channel_prefix + ":{region}:{seq}"}
    if shaped:
        route.update(where={"feeling": {"in": ["happy", "ok"]}, "big": {"gt": 1},
                            "fee": {"lt": 3},
                            "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
                     ignore_columns=["ratio"], include_types=True)
    async with subscriber, Connector(make_config(database, redis_url, [route])):
        await pg.execute(KIND_ROW)
        got = await subscriber.wait_for(1, timeout=5)
    assert [c for c, _ in got] == [channel_prefix + ":eu:1"]
    event = json.loads(subscriber.raw[0], parse_float=Decimal)
    new = event["new"]
    assert new["tags"] == ["a", "b c", None] and new["matrix"] == [[1, 2], [3, 4]]
    assert new["doc"] == {"k": [1, {"x": None}], "n": Decimal("1.50")}
    assert new["raw"] == {"keep": "spacing"}
    assert new["big"] == Decimal("12345678901234567890.12345678901234567890")
    assert new["at_tz"] == "2026-01-02T01:04:05.123456+00:00"
    assert new["at_local"] == "2026-01-02T03:04:05.5" and new["day"] == "2026-01-02"
    assert new["blob"] == "\\x00ff10" and new["feeling"] == "happy"
    assert new["price"] == Decimal("3.1415926535") and new["doubled"] == 2
    assert new["uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    if shaped:
        assert "ratio" not in new
        assert event["columns"]["feeling"] == "mood" and event["columns"]["price"] == "positive"
        assert event["columns"]["matrix"] == "integer[]"
    else:
        assert new["ratio"] == Decimal("0.1")


async def test_a_table_without_primary_key_publishes_and_filters(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    await pg.execute("CREATE TABLE logs (line text, level int)")
    config = make_config(database, redis_url, [
        {"table": "logs", "publisher": "cache", "channel": channel_prefix + ":{op}",
         "where": {"level": {"gte": 3}}, "columns": ["line"], "split_key_change": True}])
    async with subscriber, Connector(config):
        await pg.execute("INSERT INTO logs VALUES ('a', 1), ('b', 5)")
        await pg.execute("UPDATE logs SET line = 'bb' WHERE line = 'b'")
        got = await subscriber.wait_for(2, timeout=5)
    assert [(c.rsplit(":", 1)[1], e["new"]) for c, e in got] == [
        ("insert", {"line": "b"}), ("update", {"line": "bb"})]
