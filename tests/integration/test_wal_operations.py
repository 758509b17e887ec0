"""Operating the wal source against a real wal_level=logical cluster: heartbeats measure the
lag and show in /metrics and status with the slot's WAL figures; a slot that is dropped or
invalidated stops the daemon and install with one line, never a silent new slot; and quiet
captured tables in a busy database do not make the slot hold back WAL without bound."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import yaml

from connector import Connector, pipeline
from connector.config import from_dict as config_from_dict
from connector.db import ChangesLost
from connector.readers import polling, wal
from connector.store.install import install, status
from tests.conftest import RedisSubscriber
from tests.e2e.support import wait_until
from tests.integration.test_wal_source import wal_config

RETAINED = ("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), restart_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = 'pgconnector'")
CONFIRMED_LAG = ("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn)"
                 "::bigint FROM pg_replication_slots WHERE slot_name = 'pgconnector'")


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Heartbeats and gauges every 0.3 s instead of every 10 and 5."""
    monkeypatch.setattr(wal, "HEARTBEAT", 0.3)
    monkeypatch.setattr(polling, "HOUSEKEEPING", 0.3)
    monkeypatch.setattr(pipeline, "HOUSEKEEPING", 0.3)


def gauge(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} missing from /metrics"
    return float(found[1])


async def test_heartbeats_measure_the_lag_for_metrics_and_status(
        logical_database: str, redis_url: str, channel_prefix: str, quick: None) -> None:
    conn = await asyncpg.connect(logical_database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        config = wal_config(logical_database, redis_url, [
            {"table": "t", "publisher": "cache", "channel": channel_prefix + ":t"}])
        async with RedisSubscriber(redis_url, channel_prefix + ":t") as sub, \
                Connector(config) as c:
            await conn.execute("INSERT INTO t VALUES (1)")
            await sub.wait_for(1)

            def measured() -> bool:
                text = c.metrics.render()[0].decode()
                return "pgconnector_slot_lag_seconds " in text and gauge(
                    text, "pgconnector_slot_lag_seconds") > 0

            await wait_until(measured, 10, "a heartbeat's lag in /metrics")
            text = c.metrics.render()[0].decode()
            # A local round trip: well under a second (not a poll interval or a WAL writer
            # delay), and the slot's WAL figures are there.
            assert gauge(text, "pgconnector_slot_lag_seconds") < 1.0
            assert gauge(text, "pgconnector_slot_retained_wal_bytes") > 0
            assert gauge(text, "pgconnector_slot_safe_wal_bytes") == -1  # unlimited here
            assert gauge(text, "pgconnector_slot_near_limit") == 0

            async def in_status() -> bool:
                slot = (await status(conn, "pgconnector"))["slot"]
                return slot["lag_seconds"] is not None

            await wait_until(in_status, 10, "the heartbeat's lag in status")
            slot = (await status(conn, "pgconnector"))["slot"]
            assert slot["name"] == "pgconnector" and slot["exists"] and slot["active"]
            assert slot["wal_status"] == "reserved" and slot["near_limit"] is False
            assert 0 < slot["lag_seconds"] < 1.0 and slot["retained_bytes"] > 0
            # The heartbeats keep the slot's confirmed position at the WAL's end while idle.
            await wait_until(lambda: _slot_lag(conn), 10, "the slot confirmed to the WAL's end")
    finally:
        await conn.close()


async def _slot_lag(conn: asyncpg.Connection) -> bool:
    lag = await conn.fetchval(
        "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn) "
        "FROM pg_replication_slots WHERE slot_name = 'pgconnector'")
    return bool(lag < 1024)


async def test_a_slot_dropped_while_streaming_stops_the_daemon_with_one_line(
        logical_database: str, redis_url: str, channel_prefix: str) -> None:
    conn = await asyncpg.connect(logical_database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        config = wal_config(logical_database, redis_url, [
            {"table": "t", "publisher": "cache", "channel": channel_prefix + ":t"}])
        c = Connector(config)
        await c.start()
        assert c._task is not None
        try:
            # End its walsender and drop the slot before it reconnects (a DBA's mistake).
            for _ in range(200):
                await conn.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    "WHERE slot_name = 'pgconnector' AND active")
                with contextlib.suppress(asyncpg.ObjectInUseError):
                    await conn.execute("SELECT pg_drop_replication_slot('pgconnector')")
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the slot could not be dropped")
            done, _ = await asyncio.wait({c._task}, timeout=15)
            assert done, "the daemon went on without its slot"
            exc = c._task.exception()
            assert isinstance(exc, ChangesLost), exc
            assert "'pgconnector'" in str(exc) and "lost" in str(exc)
            assert "--recreate-slot" in str(exc) and "\n" not in str(exc)
        finally:
            await c.stop()
        # install refuses to start over silently...
        with pytest.raises(ChangesLost):
            await install(conn, config_from_dict(config))
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgconnector'") == 0
        # ...until told to: then capture starts again from now.
        await install(conn, config_from_dict(config), recreate_slot=True)
        async with RedisSubscriber(redis_url, channel_prefix + ":t") as sub, \
                Connector(config, install=False):
            await conn.execute("INSERT INTO t VALUES (7)")
            await sub.wait_for(1)
        assert [m["new"] for _, m in sub.messages] == [{"id": 7}]
    finally:
        await conn.close()


async def test_an_invalidated_slot_is_one_line_and_exit_1_at_start(
        logical_database: str, redis_url: str, channel_prefix: str, tmp_path: Path) -> None:
    """PostgreSQL invalidates a slot that falls max_slot_wal_keep_size behind (wal_status
    lost): `pgconnector start` says so in one line and exits 1; the slot is left as it is."""
    conn = await asyncpg.connect(logical_database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        await conn.execute("CREATE TABLE other (pad text)")
        config = wal_config(logical_database, redis_url, [
            {"table": "t", "publisher": "cache", "channel": channel_prefix + ":t"}])
        await install(conn, config_from_dict(config))
        await conn.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        await conn.execute("SELECT pg_reload_conf()")
        try:
            for _ in range(50):
                await conn.execute("INSERT INTO other SELECT repeat('x', 1000) "
                                   "FROM generate_series(1, 2000)")
                await conn.execute("SELECT pg_switch_wal()")
                await conn.execute("CHECKPOINT")
                if await conn.fetchval("SELECT wal_status FROM pg_replication_slots "
                                       "WHERE slot_name = 'pgconnector'") == "lost":
                    break
            else:
                pytest.fail("PostgreSQL never invalidated the slot")
        finally:
            await conn.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
            await conn.execute("SELECT pg_reload_conf()")
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        started = time.monotonic()
        result = subprocess.run(
            [str(Path(sys.executable).with_name("pgconnector")), "start", "-c", str(path)],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr
        assert "invalidated" in errors[0] and "lost" in errors[0]
        assert "--recreate-slot" in errors[0]
        assert time.monotonic() - started < 30
        slot = (await status(conn, "pgconnector"))["slot"]
        assert slot["wal_status"] == "lost" and slot["near_limit"] is True
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_quiet_captured_tables_in_a_busy_database_keep_retained_wal_bounded(
        logical_database: str, redis_url: str, channel_prefix: str) -> None:
    """Issue 14: our tables idle, another table written at full speed for 60 s by 4 clients:
    the confirmed position keeps up (heartbeats and keepalives), and the slot's retained WAL
    stays under 64 MB - or, where the writers make more than 4 MB of WAL a second, under 20 s
    of it: PostgreSQL 15 moves a slot's restart point only at a running-transactions record
    (every 15 s, or at a checkpoint), whatever the reader confirms; pg_log_standby_snapshot()
    to log one sooner is PostgreSQL 16's."""
    conn = await asyncpg.connect(logical_database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        await conn.execute("CREATE TABLE other (id bigserial, pad text)")
        config = wal_config(logical_database, redis_url, [
            {"table": "t", "publisher": "cache", "channel": channel_prefix + ":t"}])
        async with Connector(config):
            stop = time.monotonic() + 60
            written = 0

            async def write() -> None:
                nonlocal written
                w = await asyncpg.connect(logical_database)
                try:
                    while time.monotonic() < stop:
                        await w.execute("INSERT INTO other (pad) VALUES (repeat('x', 100))")
                        written += 1
                finally:
                    await w.close()

            start = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), "
                                        "'0/0')::bigint")
            began = time.monotonic()
            writers = [asyncio.create_task(write()) for _ in range(4)]
            peak = lag = 0
            while time.monotonic() < stop:
                await asyncio.sleep(0.5)
                peak = max(peak, await conn.fetchval(RETAINED))
                lag = max(lag, await conn.fetchval(CONFIRMED_LAG))
            await asyncio.gather(*writers)
            took = time.monotonic() - began
        total = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), "
                                    "'0/0')::bigint") - start
        rate = total / took
        print(f"rows {written}, WAL {total / 2**20:.0f} MB ({rate / 2**20:.1f} MB/s), peak "
              f"retained {peak / 2**20:.1f} MB, confirmed at most {lag / 2**20:.1f} MB behind")
        assert written > 10_000  # the other table really was busy
        assert lag < 16 * 2**20, f"the confirmed position fell {lag / 2**20:.1f} MB behind"
        bound = max(64 * 2**20, 20 * rate)
        assert peak < bound, (f"the slot held back {peak / 2**20:.1f} MB (bound "
                              f"{bound / 2**20:.0f} MB at {rate / 2**20:.1f} MB/s of WAL)")
    finally:
        await conn.close()


async def _confirmed(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(
        "SELECT pg_wal_lsn_diff(confirmed_flush_lsn, '0/0') FROM pg_replication_slots "
        "WHERE slot_name = 'pgconnector'"))


async def test_a_daemon_killed_while_its_publisher_holds_a_batch_delivers_it_again(
        logical_database: str, redis_url: str, channel_prefix: str, tmp_path: Path) -> None:
    """Redis stops answering (a half-open cut) while transactions 2 and 3 are being
    published: status updates go on, but the slot is never confirmed past transaction 1; a
    SIGKILL then, and a new daemon delivers 2 and 3 again, and not 1."""
    from urllib.parse import urlsplit

    from tests.e2e.support import daemon_factory
    from tests.faults.proxy import TcpProxy

    redis = urlsplit(redis_url)
    proxy = TcpProxy(redis.hostname or "127.0.0.1", redis.port or 6379).start()
    conn = await asyncpg.connect(logical_database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        config = wal_config(logical_database, redis_url, [
            {"table": "t", "publisher": "cache", "channel": channel_prefix + ":t"}])
        config["publishers"]["cache"].update(url=f"redis://127.0.0.1:{proxy.port}/0",
                                             timeout=60)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        await install(conn, config_from_dict(config))
        async with RedisSubscriber(redis_url, channel_prefix + ":t") as sub, \
                daemon_factory() as daemons:
            first = await daemons(path, tmp_path, args=["--no-install"]).start()
            one = await conn.fetchval(
                "INSERT INTO t VALUES (1) "
                "RETURNING pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')")
            await sub.wait_for(1, timeout=20)
            await wait_until(lambda: _past(conn, int(one)), 10, "transaction 1 confirmed")
            proxy.blackhole()
            two = int(await conn.fetchval(
                "INSERT INTO t VALUES (2) "
                "RETURNING pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')"))
            await conn.execute("INSERT INTO t VALUES (3)")
            await asyncio.sleep(wal.STATUS_INTERVAL + 1)  # status updates went out meanwhile
            assert first.running
            assert await _confirmed(conn) <= two, "confirmed past a transaction not delivered"
            await first.kill()
            proxy.restore()
            await daemons(path, tmp_path, args=["--no-install"]).start()
            await sub.wait_for(3, timeout=20)
            await asyncio.sleep(0.5)
        assert [m["new"]["id"] for _, m in sub.messages] == [1, 2, 3]
    finally:
        await conn.close()
        proxy.close()


async def _past(conn: asyncpg.Connection, lsn: int) -> bool:
    return await _confirmed(conn) > lsn
