"""The replication-protocol stream (connector/readers/replication.py) against a real
wal_level=logical cluster: pgoutput messages in order, the slot moved only by confirm, the
same changes again from an unconfirmed position, and a consumer that stops reading for longer
than wal_sender_timeout keeps its connection (the status task)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from connector.readers import pgoutput
from connector.readers.replication import ReplicationStream, XLogData
from connector.vocabulary import PostgresConfig

SLOT, PUBLICATION = "stream_test", "stream_pub"


@pytest.fixture
async def conn(logical_database: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(logical_database)
    await c.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
    await c.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE t")
    await c.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", SLOT)
    try:
        yield c
    finally:
        await c.close()


def stream(dsn: str, **kw: float) -> ReplicationStream:
    return ReplicationStream(PostgresConfig(dsn=dsn), SLOT, PUBLICATION, **kw)  # type: ignore[arg-type]


DECODERS: dict[int, pgoutput.Decoder] = {}  # one per stream: relations are described once


async def read_until(s: ReplicationStream, inserts: int, within: float = 10.0
                     ) -> tuple[list[XLogData], list[pgoutput.Change], int | None]:
    decoder = DECODERS.setdefault(id(s), pgoutput.Decoder())
    got: list[XLogData] = []
    changes: list[pgoutput.Change] = []
    committed: int | None = None
    deadline = time.monotonic() + within
    while sum(c.op == "insert" for c in changes) < inserts:
        assert time.monotonic() < deadline, f"only {len(changes)} changes arrived"
        batch = await s.read(1000, 0.2)
        got += batch
        more, end = decoder.feed((m.lsn, m.payload) for m in batch)
        changes += more
        committed = end if end is not None else committed
    return got, changes, committed


async def confirmed_flush(c: asyncpg.Connection) -> int:
    text = await c.fetchval("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                            "WHERE slot_name = $1", SLOT)
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


async def until_confirmed(c: asyncpg.Connection, lsn: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while await confirmed_flush(c) < lsn:
        assert time.monotonic() < deadline, "the confirmed position never reached the slot"
        await asyncio.sleep(0.05)


async def test_changes_stream_in_order_and_the_slot_moves_only_when_confirmed(
        logical_database: str, conn: asyncpg.Connection) -> None:
    before = await confirmed_flush(conn)
    s = stream(logical_database, status_interval=0.2)
    await s.open()
    try:
        await conn.execute("INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 500) g")
        await conn.execute("INSERT INTO t VALUES (501, 'last')")
        _, changes, committed = await read_until(s, 501)
        assert [c.new[0] for c in changes if c.op == "insert"] == [
            str(i).encode() for i in range(1, 502)]
        assert committed is not None
        await asyncio.sleep(0.6)  # several status updates: nothing confirmed, nothing moves
        assert await confirmed_flush(conn) == before
        s.confirm(committed)
        await until_confirmed(conn, committed)
    finally:
        await s.close()


async def test_what_was_not_confirmed_comes_again(
        logical_database: str, conn: asyncpg.Connection) -> None:
    s = stream(logical_database, status_interval=0.2)
    await s.open()
    try:
        await conn.execute("INSERT INTO t VALUES (1, 'a')")
        _, _, first = await read_until(s, 1)
        assert first is not None
        s.confirm(first)
        await until_confirmed(conn, first)  # the status task reported it
        await conn.execute("INSERT INTO t VALUES (2, 'b')")
        await read_until(s, 1)  # read, never confirmed: the daemon died before delivering
    finally:
        await s.close()
    again = stream(logical_database, status_interval=0.2)
    await again.open()
    try:
        _, changes, _ = await read_until(again, 1)
        assert [c.new[0] for c in changes if c.op == "insert"] == [b"2"]
    finally:
        await again.close()


async def test_a_consumer_that_stops_reading_keeps_its_connection(
        logical_pg_admin_url: str, logical_database: str, conn: asyncpg.Connection) -> None:
    admin = await asyncpg.connect(logical_pg_admin_url)
    try:
        await admin.execute("ALTER SYSTEM SET wal_sender_timeout = '1s'")
        await admin.execute("SELECT pg_reload_conf()")
        s = stream(logical_database, status_interval=0.4, buffer=100)
        await s.open()
        try:
            # More than the buffer holds: reading stops (the publisher is stalled) ...
            await conn.execute("INSERT INTO t SELECT g, 'n' FROM generate_series(1, 1000) g")
            await asyncio.sleep(3.0)  # ... three wal_sender_timeouts without reading
            _, changes, _ = await read_until(s, 1000)
            assert sum(c.op == "insert" for c in changes) == 1000
            await conn.execute("INSERT INTO t VALUES (5000, 'after')")
            _, changes, _ = await read_until(s, 1)
            assert changes[-1].new[0] == b"5000"
        finally:
            await s.close()
    finally:
        await admin.execute("ALTER SYSTEM RESET wal_sender_timeout")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()


async def test_a_slot_that_does_not_exist_is_one_clear_line(logical_database: str) -> None:
    from connector.db import DatabaseError

    s = ReplicationStream(PostgresConfig(dsn=logical_database), "no_such_slot", PUBLICATION)
    with pytest.raises(DatabaseError) as exc:
        await s.open()
    assert "no_such_slot" in str(exc.value) and "\n" not in str(exc.value)
