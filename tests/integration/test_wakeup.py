"""The trigger source's wake-up: writers NOTIFY only while the consumer dozes (holds the doze
lock, sql/doze.sql), so a busy or stopped consumer costs them nothing, and no change committed
around the moment the consumer starts dozing waits for a poll."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from connector import Connector
from connector.config import from_dict as config_from_dict
from connector.lease import Lease
from connector.readers import Batch, Reader, open_reader
from connector.readers.polling import GATHER_FROM
from connector.readers.session import WAKE_CHANNEL
from connector.store.install import install
from connector.store.queries import Queries
from tests.conftest import RedisSubscriber
from tests.integration.helpers import make_config

DOZE = Queries("pgconnector").get("doze")
# Advisory locks are per database, and pg_locks shows every database's: without the database
# filter a test running beside this one (another database's consumer dozing) is seen too.
DOZE_HELD = """SELECT pid FROM pg_catalog.pg_locks
               WHERE locktype = 'advisory' AND classid = 1885823843 AND objid = 3
                 AND objsubid = 2 AND mode = 'ExclusiveLock' AND granted
                 AND database = (SELECT oid FROM pg_catalog.pg_database
                                 WHERE datname = pg_catalog.current_database())"""


async def listen(dsn: str) -> tuple[asyncpg.Connection, asyncio.Queue[str]]:
    conn = await asyncpg.connect(dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await conn.add_listener(WAKE_CHANNEL, lambda *args: heard.put_nowait(args[2]))
    return conn, heard


async def heard_within(heard: asyncio.Queue[str], seconds: float) -> bool:
    try:
        await asyncio.wait_for(heard.get(), seconds)
        return True
    except TimeoutError:
        return False


async def test_writes_notify_only_while_the_consumer_dozes(
        database: str, pg: asyncpg.Connection, redis_url: str) -> None:
    await pg.execute("CREATE TABLE items (id serial PRIMARY KEY, name text)")
    await install(pg, config_from_dict(make_config(database, redis_url, [
        {"table": "items", "publisher": "cache", "channel": "c"}])))
    listener, heard = await listen(database)
    consumer = await asyncpg.connect(database)
    writer = await asyncpg.connect(database)
    try:
        # No consumer dozing (stopped, or busy draining): writes send nothing.
        await pg.execute("INSERT INTO items (name) VALUES ('a')")
        assert not await heard_within(heard, 0.5)

        assert await consumer.fetchval(DOZE) is True
        await pg.execute("INSERT INTO items (name) VALUES ('b')")
        assert await heard_within(heard, 5)
        await consumer.execute(Queries("pgconnector").get("undoze"))
        await pg.execute("INSERT INTO items (name) VALUES ('c')")
        assert not await heard_within(heard, 0.5)

        # A writer that captured a row before the consumer dozed, and has not committed, keeps
        # the consumer from dozing: it sent no wake-up, so the consumer must keep polling.
        tx = writer.transaction()
        await tx.start()
        await writer.execute("INSERT INTO items (name) VALUES ('d')")
        assert await consumer.fetchval(DOZE) is False
        await tx.commit()
        assert await consumer.fetchval(DOZE) is True
        # Once it dozes, a write that began after it still wakes it.
        await pg.execute("INSERT INTO items (name) VALUES ('e')")
        assert await heard_within(heard, 5)
    finally:
        for conn in (listener, consumer, writer):
            await conn.close()


async def test_an_idle_daemon_is_woken_not_polled(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    """With a 10 s poll interval, a change made while the daemon is idle arrives at once."""
    await pg.execute("CREATE TABLE items (id serial PRIMARY KEY, name text)")
    config = make_config(database, redis_url, [
        {"table": "items", "publisher": "cache", "channel": channel_prefix + ":items"}],
        poll_interval=10.0)
    async with subscriber, Connector(config):
        assert await doze_held(pg), "the idle daemon does not doze"
        for n in range(2):
            # Idle long enough for the polls to back off past 2 s (2 ms, doubling).
            await asyncio.sleep(2.5)
            started = time.monotonic()
            await pg.execute("INSERT INTO items (name) VALUES ($1)", f"n{n}")
            got = await subscriber.wait_for(n + 1, timeout=5)
            assert len(got) == n + 1
            assert time.monotonic() - started < 0.5, "waited for a poll, not woken"


async def test_a_busy_source_stops_the_wake_ups_and_dozes_again_when_idle(
        database: str, pg: asyncpg.Connection, redis_url: str) -> None:
    """A stream of changes (a batch of GATHER_FROM or more) makes the source let go of the
    doze lock, so the writers send nothing; once it has nothing to claim it dozes again."""
    await pg.execute("CREATE TABLE items (id serial PRIMARY KEY, name text)")
    config = config_from_dict(make_config(database, redis_url, [
        {"table": "items", "publisher": "cache", "channel": "c"}]))
    await install(pg, config)
    source = open_reader(config.postgres, config.capture)
    await source.session.open()
    await source.open()
    try:
        await Lease(source.session, source.store).acquire()
        idle = asyncio.create_task(next_changes(source))
        assert await doze_held(pg), "an idle source dozes"
        await pg.execute("INSERT INTO items (name) SELECT 'n' || g FROM generate_series(1, $1) g",
                         GATHER_FROM)
        batch = await asyncio.wait_for(idle, 5)
        assert batch is not None and len(batch.events) == GATHER_FROM
        assert await pg.fetchval(DOZE_HELD) is None, "busy, yet writers are asked to wake it"
        await source.ack(batch)

        nothing = asyncio.create_task(next_changes(source))
        assert await doze_held(pg), "idle again, but not dozing"
        await pg.execute("INSERT INTO items (name) VALUES ('last')")
        batch = await asyncio.wait_for(nothing, 5)
        assert batch is not None and [e.data["new"]["name"] for e in batch.events] == ["last"]
        await source.ack(batch)
    finally:
        source.interrupt()
        await source.close()
        await source.session.close()


async def next_changes(source: Reader) -> Batch | None:
    """The reader's next batch that has changes. read_batch returns empty ones too, idle
    rounds: a wake-up that found nothing to claim (one that came while the reader was already
    claiming what woke it, say) and the housekeeping round every HOUSEKEEPING seconds."""
    while True:
        batch = await source.read_batch()
        if batch is None or batch.events:
            return batch


async def doze_held(pg: asyncpg.Connection) -> bool:
    for _ in range(500):
        if await pg.fetchval(DOZE_HELD) is not None:
            return True
        await asyncio.sleep(0.01)
    return False
