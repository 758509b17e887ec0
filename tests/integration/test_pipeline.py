"""The whole pipeline in-process: real PostgreSQL → Connector → real Redis."""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as aioredis

from connector import Connector
from connector.config import from_dict as config_from_dict
from connector.store.install import install
from tests.conftest import RedisSubscriber
from tests.e2e.support import wait_until
from tests.integration.helpers import free_port, make_config, redis_server

TABLE = """CREATE TABLE users (
    id serial PRIMARY KEY, name text, score numeric, tags text[], meta jsonb,
    active boolean, born date, seen timestamptz, note text)"""


async def test_every_operation_arrives_with_old_new_and_changes(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    await pg.execute(TABLE)
    config = make_config(database, redis_url, [
        {"table": "public.users", "publisher": "cache", "channel": channel_prefix + ":users:{op}"}])
    async with subscriber, Connector(config):
        await pg.execute("INSERT INTO users (name, score, tags, meta, active, born, seen) VALUES "
                         "('Ada', 12.50, '{a,b}', '{\"k\": [1, {\"x\": null}]}', true, "
                         "'1815-12-10', '2026-01-02 03:04:05.123456+00')")
        await pg.execute("UPDATE users SET name = 'Ada L', score = 13 WHERE id = 1")
        await pg.execute("DELETE FROM users WHERE id = 1")
        await pg.execute("TRUNCATE users")
        got = await subscriber.wait_for(4)
    assert [c for c, _ in got] == [f"{channel_prefix}:users:{op}"
                                   for op in ("insert", "update", "delete", "truncate")]
    ins, upd, dele, trunc = (e for _, e in got)
    row = {"id": 1, "name": "Ada", "score": 12.50, "tags": ["a", "b"],
           "meta": {"k": [1, {"x": None}]}, "active": True, "born": "1815-12-10",
           "seen": "2026-01-02T03:04:05.123456+00:00", "note": None}
    assert ins["op"] == "insert" and ins["schema"] == "public" and ins["table"] == "users"
    assert ins["new"] == row and ins["old"] is None and "changes" not in ins
    assert upd["old"] == row and upd["new"] == {**row, "name": "Ada L", "score": 13}
    assert upd["changes"] == {"name": {"old": "Ada", "new": "Ada L"},
                              "score": {"old": 12.50, "new": 13}}
    assert dele["new"] is None and dele["old"] == {**row, "name": "Ada L", "score": 13}
    assert trunc["new"] is None and trunc["old"] is None
    ids = [e["id"] for e in (ins, upd, dele, trunc)]
    assert len(set(ids)) == 4
    for e in (ins, upd, dele, trunc):
        assert isinstance(e["txid"], int) and e["commit_time"].endswith("Z")
        assert e["id"] == f"{e['txid']}-{e['id'].split('-')[1]}"
    assert await pg.fetchval("SELECT count(*) FROM pgconnector.outbox") == 0


async def test_per_row_channels_and_fan_out(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    await pg.execute(TABLE)
    config = make_config(database, redis_url, [
        {"table": "users", "publisher": "cache", "channel": channel_prefix + ":row:{id}"},
        {"table": "users", "publisher": "cache", "channel": channel_prefix + ":all",
         "operations": ["insert"]}])
    async with subscriber, Connector(config):
        await pg.execute("INSERT INTO users (name) SELECT 'n' || g FROM generate_series(1, 3) g")
        await pg.execute("DELETE FROM users WHERE id = 2")
        got = await subscriber.wait_for(7)
    channels = [c for c, _ in got]
    assert sorted(channels) == sorted([f"{channel_prefix}:row:{i}" for i in (1, 2, 3, 2)]
                                      + [f"{channel_prefix}:all"] * 3)
    # per row, events keep their order
    assert [e["op"] for c, e in got if c.endswith(":row:2")] == ["insert", "delete"]


async def test_changes_made_while_stopped_arrive_on_start(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    await pg.execute(TABLE)
    config = make_config(database, redis_url, [
        {"table": "users", "publisher": "cache", "channel": channel_prefix + ":u"}])
    async with Connector(config):
        pass  # installs, then stops
    await pg.execute("INSERT INTO users (name) SELECT 'n' || g FROM generate_series(1, 500) g")
    assert await pg.fetchval("SELECT count(*) FROM pgconnector.outbox") == 500
    async with subscriber, Connector(config):
        got = await subscriber.wait_for(500)
    assert [e["new"]["id"] for _, e in got] == list(range(1, 501))


async def test_one_megabyte_row_is_delivered_whole(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    await pg.execute(TABLE)
    big = "x" * (1024 * 1024)
    config = make_config(database, redis_url, [
        {"table": "users", "publisher": "cache", "channel": channel_prefix + ":u"}])
    async with subscriber, Connector(config):
        await pg.execute("INSERT INTO users (name, note) VALUES ('big', $1)", big)
        got = await subscriber.wait_for(1)
    assert got[0][1]["new"]["note"] == big


async def test_hostile_names_end_to_end(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    await pg.execute('CREATE SCHEMA "My Schema"')
    await pg.execute('CREATE TABLE "My Schema"."Order ""Items""; drop" '
                     '("Item Id" int PRIMARY KEY, "wEird" text)')
    config = make_config(database, redis_url, [
        {"table": '"My Schema"."Order ""Items""; drop"', "publisher": "cache",
         "channel": channel_prefix + ":{table}:{Item Id}"}], schema="My CDC")
    async with subscriber, Connector(config):
        await pg.execute('INSERT INTO "My Schema"."Order ""Items""; drop" VALUES (7, \'w\')')
        got = await subscriber.wait_for(1)
    channel, event = got[0]
    assert channel == f'{channel_prefix}:Order "Items"; drop:7'
    assert (event["schema"], event["table"]) == ("My Schema", 'Order "Items"; drop')
    assert event["new"] == {"Item Id": 7, "wEird": "w"}


async def test_stream_mode_and_dead_letters(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str) -> None:
    await pg.execute(TABLE)
    client = aioredis.Redis.from_url(redis_url)
    # A key of the wrong type makes XADD fail for that row only: never deliverable.
    await client.set(f"{channel_prefix}:2", "not a stream")
    config = make_config(database, redis_url, [
        {"table": "users", "publisher": "cache", "channel": channel_prefix + ":{id}"}],
        mode="stream")
    try:
        async with Connector(config) as c:
            await pg.execute("INSERT INTO users (name) "
                             "SELECT 'n' || g FROM generate_series(1, 3) g")
            async with asyncio.timeout(10):
                while c.stats.events < 3:
                    await asyncio.sleep(0.02)
        entries = await client.xrange(f"{channel_prefix}:1")
        assert len(entries) == 1
        fields = entries[0][1]
        assert fields[b"op"] == b"insert"
        assert b'"new":{"id":1' in fields[b"event"]
        assert len(await client.xrange(f"{channel_prefix}:3")) == 1
        dead = await pg.fetch("SELECT event_id, publisher, channel, error, attempts, "
                              "payload::jsonb->'new'->>'id' AS row_id "
                              "FROM pgconnector.dead_letters")
        assert len(dead) == 1
        assert dead[0]["row_id"] == "2" and dead[0]["channel"] == f"{channel_prefix}:2"
        assert "WRONGTYPE" in dead[0]["error"] and dead[0]["attempts"] == 1
        assert await pg.fetchval("SELECT count(*) FROM pgconnector.outbox") == 0
    finally:
        await client.delete(*[f"{channel_prefix}:{i}" for i in (1, 2, 3)])
        await client.aclose()


async def test_second_instance_is_standby_and_takes_over(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    await pg.execute(TABLE)
    config = make_config(database, redis_url, [
        {"table": "users", "publisher": "cache", "channel": channel_prefix + ":u"}],
        standby_retry=0.2)
    async with subscriber:
        first = Connector(config)
        await first.start()
        second = Connector(config)
        await second.start()
        assert (first.state, second.state) == ("active", "standby")
        await pg.execute("INSERT INTO users (name) VALUES ('one')")
        await subscriber.wait_for(1)
        await first.stop()
        await pg.execute("INSERT INTO users (name) VALUES ('two')")
        got = await subscriber.wait_for(2)
        assert second.state == "active"
        await second.stop()
    assert [e["new"]["name"] for _, e in got] == ["one", "two"]
    assert second.stats.events == 1


async def test_redis_down_at_first_loses_nothing(
        database: str, pg: asyncpg.Connection, channel_prefix: str) -> None:
    await pg.execute(TABLE)
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    config = make_config(database, url, [
        {"table": "users", "publisher": "cache", "channel": channel_prefix + ":u"}])
    async with Connector(config) as c:
        await pg.execute("INSERT INTO users (name) SELECT 'n' || g FROM generate_series(1, 50) g")
        # The publisher is failing: its messages are parked (counted once the claim commits).
        await wait_until(lambda: c.stats.parked >= 50, 20, "the 50 messages parked")
        assert c.stats.parked == 50
        assert await pg.fetchval("SELECT count(*) FROM pgconnector.outbox") == 0
        assert await pg.fetchval("SELECT count(*) FROM pgconnector.parked") == 50
        with redis_server(port):
            async with RedisSubscriber(url, channel_prefix + "*") as sub:
                got = await sub.wait_for(50, timeout=20)
        assert sorted(e["new"]["id"] for _, e in got) == list(range(1, 51))


async def test_changes_of_a_dropped_table_still_arrive(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    """Changes captured before their table was dropped keep the names install recorded (the
    claim finds the relation in neither pg_class nor the cache)."""
    await pg.execute("CREATE TABLE gone (id int PRIMARY KEY, name text)")
    config = make_config(database, redis_url, [
        {"table": "gone", "publisher": "cache", "channel": channel_prefix + ":gone"}])
    await install(pg, config_from_dict(config))
    await pg.execute("INSERT INTO gone VALUES (1, 'a')")
    await pg.execute("DROP TABLE gone")
    async with subscriber, Connector(config, install=False):
        got = await subscriber.wait_for(1)
    assert [c for c, _ in got] == [channel_prefix + ":gone"]
    event = got[0][1]
    assert (event["op"], event["schema"], event["table"]) == ("insert", "public", "gone")
    assert event["new"] == {"id": 1, "name": "a"}
    assert await pg.fetchval("SELECT count(*) FROM pgconnector.outbox") == 0


async def test_changes_of_a_relation_known_nowhere_are_consumed_unrouted(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    """A change whose table was dropped and then forgotten by install (no names anywhere)
    does not stop the stream: it matches no route, and the changes after it arrive."""
    await pg.execute("CREATE TABLE gone (id int PRIMARY KEY, name text)")
    await pg.execute("CREATE TABLE kept (id int PRIMARY KEY, name text)")
    config = make_config(database, redis_url, [
        {"table": t, "publisher": "cache", "channel": f"{channel_prefix}:{t}"}
        for t in ("gone", "kept")])
    await install(pg, config_from_dict(config))
    await pg.execute("INSERT INTO gone VALUES (1, 'a')")
    await pg.execute("DROP TABLE gone")
    await pg.execute("DELETE FROM pgconnector.installed_tables WHERE table_name = 'gone'")
    await pg.execute("INSERT INTO kept VALUES (2, 'b')")
    async with subscriber, Connector(config, install=False):
        got = await subscriber.wait_for(1)
        await asyncio.sleep(0.3)  # anything else would have come by now
    assert [c for c, _ in subscriber.messages] == [channel_prefix + ":kept"]
    assert got[0][1]["new"] == {"id": 2, "name": "b"}
    assert await pg.fetchval("SELECT count(*) FROM pgconnector.outbox") == 0
