"""The wal source (logical decoding) against a real wal_level=logical cluster: the same events
as the trigger source, whole transactions however large, nothing lost across a restart, the
slot moved only past what was delivered, and install/uninstall that leave nothing behind."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from connector import Connector
from connector.config import from_dict as config_from_dict
from connector.db import DatabaseError
from connector.readers import polling
from connector.store.install import BacklogNotEmpty, install, uninstall
from tests.conftest import RedisSubscriber
from tests.e2e.support import wait_until
from tests.integration.helpers import make_config

TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE TABLE kinds (
    id bigserial PRIMARY KEY,
    small smallint, whole integer, big bigint, exact numeric, approx double precision,
    single real, flag boolean, label text, code varchar(8), fixed char(3), js json, jb jsonb,
    at timestamptz, local timestamp, day date, clock time, clockz timetz, span interval,
    uid uuid, raw bytea, nums int[], words text[], feeling mood, duo pair, span4 int4range,
    addr inet, money_ money, bits bit(4)
)"""

ROW = """
INSERT INTO kinds (small, whole, big, exact, approx, single, flag, label, code, fixed, js, jb,
    at, local, day, clock, clockz, span, uid, raw, nums, words, feeling, duo, span4, addr,
    money_, bits)
VALUES (-3, 2147483647, 9007199254740993, 12345678901234567890.123450, 0.1, 1.5, true,
    'he said "hi" \\ ünïcødé ✓', 'abc', 'x', '{"b": [1, 2], "a": null}', '{"n": 1.50}',
    '2026-11-21 12:34:56.789012+05:30', '2026-11-21 12:34:56', '2026-11-21', '08:00:01',
    '08:00:01+02', '1 day 02:03:04', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff',
    '{1,NULL,3}', '{"a b","c,d"}', 'happy', ROW(1, 'x y'), '[1,5)', '10.0.0.1/32', 12.5,
    B'1010'),
    (NULL, NULL, NULL, 'NaN', 'Infinity', '-Infinity', false, '', NULL, NULL, 'null', '[]',
     'infinity', '-infinity', '0044-03-15 BC', NULL, NULL, NULL, NULL, NULL, '{}', NULL, NULL,
     NULL, 'empty', NULL, NULL, NULL)"""


def wal_config(dsn: str, redis_url: str, routes: list[dict[str, Any]],
               **capture: Any) -> dict[str, Any]:
    return make_config(dsn, redis_url, routes, source="wal", poll_interval=0.05, **capture)


async def run_writes(dsn: str, redis_url: str, prefix: str, source: str,
                     statements: list[str]) -> list[dict[str, Any]]:
    """Run ``statements`` captured by ``source``; the events published, in order."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TYPES)
        config = make_config(dsn, redis_url, [
            {"table": "kinds", "publisher": "cache", "channel": f"{prefix}:{source}"}],
            source=source, poll_interval=0.05)
        async with RedisSubscriber(redis_url, f"{prefix}:{source}") as sub, Connector(config):
            for statement in statements:
                await conn.execute(statement)
            await sub.wait_for(6)
        return [m for _, m in sub.messages]
    finally:
        await conn.close()


async def test_wal_events_equal_trigger_events_for_every_type(
        database: str, logical_database: str, redis_url: str, channel_prefix: str) -> None:
    """Both sources publish the same JSON values for the same writes: numbers stay exact,
    non-finite ones strings, timestamps ISO 8601, arrays, enums, composites and ranges as
    to_jsonb writes them."""
    statements = [ROW, "UPDATE kinds SET label = 'changed', nums = '{9}' WHERE id = 1",
                  "UPDATE kinds SET flag = true WHERE id = 2",
                  "DELETE FROM kinds WHERE id = 2", "TRUNCATE kinds"]
    by_trigger = await run_writes(database, redis_url, channel_prefix, "trigger", statements)
    by_wal = await run_writes(logical_database, redis_url, channel_prefix, "wal", statements)
    assert [e["op"] for e in by_wal] == ["insert", "insert", "update", "update", "delete",
                                         "truncate"]
    assert len(by_trigger) == len(by_wal)
    for t, w in zip(by_trigger, by_wal, strict=True):
        for key in ("op", "schema", "table", "new", "old", "changes"):
            assert w.get(key) == t.get(key), (key, t.get(key), w.get(key))
        assert set(w) == set(t) | {"lsn"}
        assert w["commit_time"].endswith("Z") and isinstance(w["txid"], int)
    assert by_wal[0]["new"]["big"] == 9007199254740993  # exact beyond a double
    assert by_wal[2]["changes"] == {"label": {"old": by_wal[0]["new"]["label"],
                                              "new": "changed"},
                                    "nums": {"old": [1, None, 3], "new": [9]}}


async def test_large_transaction_arrives_whole_and_moves_the_slot_only_at_its_end(
        logical_database: str, redis_url: str, channel_prefix: str) -> None:
    conn = await asyncpg.connect(logical_database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        config = wal_config(logical_database, redis_url, [
            {"table": "t", "publisher": "cache", "channel": channel_prefix + ":t"}],
            batch_size=100)
        async with RedisSubscriber(redis_url, channel_prefix + ":t") as sub, Connector(config):
            await conn.execute("INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 2500) i")
            await conn.execute("UPDATE t SET v = 'w' WHERE id <= 10")
            await sub.wait_for(2510)
            # Acknowledged up to the end: the slot's confirmed position reaches the end of the
            # WAL written (the acknowledgement follows the last publish, so poll for it).
            lag: int | None = None

            async def acknowledged() -> bool:
                nonlocal lag
                lag = await conn.fetchval(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
                    "FROM pg_replication_slots WHERE slot_name = 'pgconnector'")
                return lag is not None and lag < 64 * 1024

            await wait_until(acknowledged, 10, "the slot acknowledged to the end")
        ids = [m["new"]["id"] for _, m in sub.messages]
        assert ids[:2500] == list(range(1, 2501))
        assert [m["op"] for _, m in sub.messages[2500:]] == ["update"] * 10
        assert len(sub.messages) == 2510
        assert lag is not None and lag < 64 * 1024  # acknowledged up to the end
    finally:
        await conn.close()


async def test_changes_made_while_stopped_arrive_on_start(
        logical_database: str, redis_url: str, channel_prefix: str) -> None:
    conn = await asyncpg.connect(logical_database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        config = wal_config(logical_database, redis_url, [
            {"table": "t", "publisher": "cache", "channel": channel_prefix + ":t"}])
        async with Connector(config):
            pass  # installs (creates the slot), then stops
        for i in range(50):
            await conn.execute("INSERT INTO t VALUES ($1, 'x')", i)
        await conn.execute("DELETE FROM t WHERE id < 5")
        async with RedisSubscriber(redis_url, channel_prefix + ":t") as sub, Connector(config):
            await sub.wait_for(55)
        assert [m["new"]["id"] for _, m in sub.messages[:50]] == list(range(50))
        assert [m["old"] for _, m in sub.messages[50:]] == [{"id": i, "v": "x"} for i in range(5)]
    finally:
        await conn.close()


async def test_replica_identity_keep_gives_the_key_as_old(
        logical_database: str, redis_url: str, channel_prefix: str) -> None:
    conn = await asyncpg.connect(logical_database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        config = wal_config(logical_database, redis_url, [
            {"table": "t", "publisher": "cache", "channel": channel_prefix + ":t"}],
            replica_identity="keep")
        async with RedisSubscriber(redis_url, channel_prefix + ":t") as sub, Connector(config):
            await conn.execute("INSERT INTO t VALUES (1, 'a')")
            await conn.execute("UPDATE t SET v = 'b'")
            await conn.execute("UPDATE t SET id = 2")
            await conn.execute("DELETE FROM t")
            await sub.wait_for(4)
        events = [m for _, m in sub.messages]
        assert events[1]["old"] is None and "changes" not in events[1]
        assert events[1]["new"] == {"id": 1, "v": "b"}
        assert events[2]["old"] == {"id": 1}  # the key changed: PostgreSQL sends the old key
        assert events[3]["old"] == {"id": 2}
        await conn.execute("CREATE TABLE nokey (v text)")
        bad = wal_config(logical_database, redis_url, [
            {"table": "nokey", "publisher": "cache", "channel": "x"}], replica_identity="keep")
        admin = await asyncpg.connect(logical_database)
        try:
            with pytest.raises(Exception, match="nokey has no primary key"):
                await install(admin, config_from_dict(bad))
        finally:
            await admin.close()
    finally:
        await conn.close()


async def test_quiet_tables_do_not_hold_back_wal(
        logical_database: str, redis_url: str, channel_prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Other tables write, ours do not: the slot still moves (a position message)."""
    monkeypatch.setattr(polling, "HOUSEKEEPING", 0.3)
    conn = await asyncpg.connect(logical_database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        await conn.execute("CREATE TABLE other (id int, pad text)")
        config = wal_config(logical_database, redis_url, [
            {"table": "t", "publisher": "cache", "channel": channel_prefix + ":t"}])
        lag_sql = ("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
                   "FROM pg_replication_slots WHERE slot_name = 'pgconnector'")
        async with Connector(config):
            await conn.execute("INSERT INTO other SELECT i, repeat('x', 200) "
                               "FROM generate_series(1, 20000) i")
            assert await conn.fetchval(lag_sql) > 1024 * 1024
            for _ in range(100):
                await asyncio.sleep(0.1)
                if await conn.fetchval(lag_sql) < 64 * 1024:
                    break
            assert await conn.fetchval(lag_sql) < 64 * 1024
    finally:
        await conn.close()


async def test_install_checks_and_uninstall_leaves_nothing(
        database: str, logical_database: str, redis_url: str) -> None:
    routes = [{"table": "t", "publisher": "cache", "channel": "c"}]
    # The shared server runs with wal_level=replica: a one-line reason, nothing installed.
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        with pytest.raises(DatabaseError, match="needs wal_level = logical"):
            await install(conn, config_from_dict(wal_config(database, redis_url, routes)))
        assert not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgconnector')")
    finally:
        await conn.close()
    conn = await asyncpg.connect(logical_database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        await conn.execute("CREATE UNIQUE INDEX t_ident ON t (id)")
        await conn.execute("ALTER TABLE t REPLICA IDENTITY USING INDEX t_ident")
        identity = ("SELECT relreplident::text FROM pg_class WHERE oid = 't'::regclass")
        trigger_cfg = config_from_dict(make_config(logical_database, redis_url, routes))
        wal_cfg = config_from_dict(wal_config(logical_database, redis_url, routes))
        await install(conn, trigger_cfg)
        await conn.execute("INSERT INTO t VALUES (1)")  # captured by the trigger, undelivered
        with pytest.raises(BacklogNotEmpty, match="1 change"):
            await install(conn, wal_cfg)
        await conn.execute("DELETE FROM pgconnector.outbox")
        report = await install(conn, wal_cfg)
        assert report.changed == ["public.t"]
        assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass"
                                   " AND NOT tgisinternal") == 0
        assert await conn.fetchval(identity) == "f"
        await install(conn, wal_cfg)  # again: what it had before is remembered once
        await install(conn, config_from_dict(wal_config(logical_database, redis_url, routes,
                                                        replica_identity="keep")))
        assert await conn.fetchval(identity) == "i"  # keep: given back
        await install(conn, wal_cfg)
        assert await conn.fetchval(identity) == "f"
        await conn.execute("INSERT INTO t VALUES (2)")  # in the slot, undelivered
        with pytest.raises(BacklogNotEmpty, match="1 captured change"):
            await uninstall(conn, "pgconnector")
        await uninstall(conn, "pgconnector", force=True)
        assert await conn.fetchval(identity) == "i"  # as before install
        assert await conn.fetchval("SELECT count(*) FROM pg_replication_slots") == 0
        assert await conn.fetchval("SELECT count(*) FROM pg_publication") == 0
    finally:
        await conn.close()


async def test_least_privilege_roles_as_the_readme_lists_them(
        logical_database: str, redis_url: str, channel_prefix: str) -> None:
    """README "Database privileges", wal: an install role that owns the table and has
    REPLICATION, a streaming role with REPLICATION and the listed grants; no superuser."""
    suffix = channel_prefix[-8:]
    install_role, stream_role = f"pgc_inst_{suffix}", f"pgc_strm_{suffix}"
    dbname = logical_database.rsplit("/", 1)[1]
    admin = await asyncpg.connect(logical_database)
    try:
        await admin.execute(f"CREATE ROLE {install_role} LOGIN REPLICATION")
        await admin.execute(f"CREATE ROLE {stream_role} LOGIN REPLICATION")
        await admin.execute(f'GRANT CONNECT, CREATE ON DATABASE "{dbname}" TO {install_role}')
        await admin.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO {stream_role}')
        await admin.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        await admin.execute(f"ALTER TABLE t OWNER TO {install_role}")
        await admin.execute("GRANT INSERT ON t TO PUBLIC")
    finally:
        await admin.close()

    def as_role(role: str) -> dict[str, Any]:
        url = logical_database.replace("postgres@", f"{role}@", 1)
        return wal_config(url, redis_url, [
            {"table": "t", "publisher": "cache", "channel": channel_prefix + ":t"}])

    inst = await asyncpg.connect(logical_database.replace("postgres@", f"{install_role}@", 1))
    try:
        await install(inst, config_from_dict(as_role(install_role)))
        for grant in (
                "GRANT USAGE ON SCHEMA pgconnector TO {r}",
                "GRANT SELECT ON pgconnector.installed_tables TO {r}",
                "GRANT SELECT ON pgconnector.meta TO {r}",
                "GRANT SELECT, INSERT, UPDATE ON pgconnector.wal_lag TO {r}",
                "GRANT SELECT, INSERT, UPDATE, DELETE ON pgconnector.parked TO {r}",
                "GRANT SELECT, INSERT ON pgconnector.dead_letters TO {r}"):
            await inst.execute(grant.format(r=stream_role))
    finally:
        await inst.close()
    writer = await asyncpg.connect(logical_database)
    try:
        async with RedisSubscriber(redis_url, channel_prefix + ":t") as sub, Connector(
                as_role(stream_role), install=False):
            await writer.execute("INSERT INTO t VALUES (1, 'a')")
            await sub.wait_for(1)
        assert [m["new"] for _, m in sub.messages] == [{"id": 1, "v": "a"}]
    finally:
        await writer.close()
