"""In-process handlers (README: Handlers) on real PostgreSQL, both sources: what they receive,
order per key with concurrency, retries and dead letters, isolation from other sinks,
timeouts, sync and async functions, transaction batches."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import threading
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from connector import ChangeEvent, ConfigError, Connector
from connector.store import dead_letters
from tests.conftest import RedisSubscriber
from tests.e2e.support import wait_until

TABLE = """CREATE TABLE accounts (
    id serial PRIMARY KEY, owner text, balance numeric(20, 2), plan text,
    tx xid8 DEFAULT pg_current_xact_id())"""


@pytest.fixture
async def db(source: tuple[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(source[0])
    await conn.execute(TABLE)
    yield conn
    await conn.close()


def config(source: tuple[str, str], **extra: Any) -> dict[str, Any]:
    url, kind = source
    return {"postgres": {"dsn": url}, "capture": {"source": kind, "poll_interval": 0.1},
            **extra}


async def test_a_handler_gets_each_change_with_exact_values(
        source: tuple[str, str], db: asyncpg.Connection) -> None:
    got: list[ChangeEvent] = []
    connector = Connector(config(source))

    @connector.on("public.accounts", "insert", "update", "delete")
    async def record(event: ChangeEvent) -> None:
        got.append(event)

    async with connector:
        await db.execute("INSERT INTO accounts (owner, balance, plan) VALUES "
                         "('ada', 12345678901.25, 'free')")
        await db.execute("UPDATE accounts SET plan = 'pro' WHERE id = 1")
        await db.execute("DELETE FROM accounts WHERE id = 1")
        await wait_until(lambda: len(got) >= 3, 15, "the handler's calls")
    ins, upd, dele = got
    assert [e.op for e in got] == ["insert", "update", "delete"]
    assert ins.schema == "public" and ins.table == "accounts" and ins.old is None
    assert ins.new is not None and ins.new["id"] == 1 and isinstance(ins.new["id"], int)
    assert ins.new["balance"] == Decimal("12345678901.25")  # exact, not a float
    assert upd.changes == {"plan": {"old": "free", "new": "pro"}}
    assert dele.new is None and dele.old is not None and dele.old["owner"] == "ada"
    for e in got:
        assert isinstance(e.txid, int) and isinstance(e.commit_time, dt.datetime)
        assert e.commit_time.tzinfo is not None
        assert e.raw.startswith(b"{") and e.id in e.raw.decode()
        assert (e.lsn is not None) == (source[1] == "wal")
    assert len({e.id for e in got}) == 3


async def test_order_per_key_with_concurrency(source: tuple[str, str],
                                              db: asyncpg.Connection) -> None:
    """10,000 updates over 50 accounts, concurrency 8: each account's changes arrive one at a
    time and in commit order, while several accounts are in the handler at once."""
    await db.execute("INSERT INTO accounts (owner, balance) "
                     "SELECT 'o' || g, 0 FROM generate_series(1, 50) g")
    seen: dict[int, list[int]] = collections.defaultdict(list)
    inside: set[int] = set()
    overlap = {"most": 0, "same_key": 0}
    done = asyncio.Event()
    connector = Connector(config(source))

    @connector.on("accounts", "update", concurrency=8)
    async def apply(event: ChangeEvent) -> None:
        assert event.new is not None
        key = event.new["id"]
        if key in inside:
            overlap["same_key"] += 1
        inside.add(key)
        overlap["most"] = max(overlap["most"], len(inside))
        await asyncio.sleep(0.0005 * (key % 3))
        inside.discard(key)
        seen[key].append(int(event.new["balance"]))
        if sum(map(len, seen.values())) >= 10_000:
            done.set()

    async with connector:
        # 200 rounds, each one transaction raising every account's balance by one.
        for _ in range(200):
            await db.execute("UPDATE accounts SET balance = balance + 1")
        await asyncio.wait_for(done.wait(), 120)
    assert overlap["same_key"] == 0
    assert overlap["most"] > 1, "different keys should run in parallel"
    assert sorted(seen) == list(range(1, 51))
    for key, balances in seen.items():
        assert balances == list(range(1, 201)), key


async def test_a_handler_raising_twice_then_succeeding_gets_it_once(
        source: tuple[str, str], db: asyncpg.Connection) -> None:
    calls: list[str] = []
    handled: list[str] = []
    connector = Connector(config(source))

    @connector.on("accounts", "insert", retry={"max_attempts": 5, "initial_backoff": 0.05})
    async def flaky(event: ChangeEvent) -> None:
        calls.append(event.id)
        if calls.count(event.id) <= 2:
            raise RuntimeError("not yet")
        handled.append(event.id)

    async with connector:
        await db.execute("INSERT INTO accounts (owner) VALUES ('a'), ('b')")
        await wait_until(lambda: len(handled) >= 2, 15, "the handler's calls")
        await asyncio.sleep(0.3)
    assert len(handled) == 2 and len(set(handled)) == 2
    assert collections.Counter(calls) == {handled[0]: 3, handled[1]: 3}
    assert await db.fetchval("SELECT count(*) FROM pgconnector.dead_letters") == 0


async def test_a_failing_handler_stops_neither_another_handler_nor_a_redis_route(
        source: tuple[str, str], db: asyncpg.Connection, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber) -> None:
    good: list[int] = []
    connector = Connector(config(
        source, publishers={"cache": {"type": "redis", "url": redis_url}},
        routes=[{"table": "accounts", "publisher": "cache", "channel": channel_prefix + ":a"}]))

    @connector.on("accounts", "insert", retry={"max_attempts": 2, "initial_backoff": 0.05})
    async def broken(event: ChangeEvent) -> None:
        raise ValueError(f"cannot handle {event.new and event.new['owner']}")

    @connector.on("accounts", "insert")
    def fine(event: ChangeEvent) -> None:  # a plain function: runs in a thread
        assert threading.current_thread() is not threading.main_thread()
        assert event.new is not None
        good.append(event.new["id"])

    async with subscriber, connector:
        await db.execute("INSERT INTO accounts (owner) SELECT 'o' || g "
                         "FROM generate_series(1, 20) g")
        got = await subscriber.wait_for(20)
        await wait_until(lambda: len(good) >= 20, 15, "the handler's calls")
        await wait_until_dead(db, 20)
    assert sorted(good) == list(range(1, 21))
    assert len(got) == 20
    rows = await db.fetch("SELECT publisher, error AS last_error FROM pgconnector.dead_letters")
    name = f"handler:{__name__}.test_a_failing_handler_stops_neither_another_handler_nor_a_" \
           "redis_route.<locals>.broken"
    assert {r["publisher"] for r in rows} == {name}
    assert all(r["last_error"].startswith("ValueError: cannot handle o") for r in rows)


async def wait_until_dead(db: asyncpg.Connection, n: int, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await db.fetchval("SELECT count(*) FROM pgconnector.dead_letters") < n:
        assert asyncio.get_running_loop().time() < deadline, "not dead-lettered in time"
        await asyncio.sleep(0.1)


async def test_a_handler_over_its_timeout_fails(source: tuple[str, str],
                                                db: asyncpg.Connection) -> None:
    calls = 0
    connector = Connector(config(source))

    async def slow(event: ChangeEvent) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(5)

    await connector.subscribe("accounts", slow, timeout=0.2, retry={"max_attempts": 2})
    async with connector:
        await db.execute("INSERT INTO accounts (owner) VALUES ('late')")
        await wait_until_dead(db, 1)
    error = await db.fetchval("SELECT error FROM pgconnector.dead_letters")
    assert error.startswith("TimeoutError") and "0.2 s" in error
    assert calls == 2


async def test_batch_transaction_gets_one_list_per_transaction(
        source: tuple[str, str], db: asyncpg.Connection) -> None:
    batches: list[list[str]] = []
    connector = Connector(config(source))

    @connector.on("accounts", batch="transaction")
    async def per_transaction(events: list[ChangeEvent]) -> None:
        batches.append([f"{e.op}:{e.new['owner'] if e.new else ''}" for e in events])

    async with connector:
        async with db.transaction():
            await db.execute("INSERT INTO accounts (owner) VALUES ('a'), ('b'), ('c')")
            await db.execute("UPDATE accounts SET plan = 'x' WHERE owner = 'b'")
        await db.execute("INSERT INTO accounts (owner) VALUES ('d')")
        await wait_until(lambda: sum(map(len, batches)) >= 5, 15, "the handler's calls")
    assert batches == [["insert:a", "insert:b", "insert:c", "update:b"], ["insert:d"]]


async def test_on_after_start_points_to_subscribe(source: tuple[str, str],
                                                  db: asyncpg.Connection) -> None:
    connector = Connector(config(source))
    async with connector:
        with pytest.raises(RuntimeError, match="subscribe"):
            connector.on("accounts")
    with pytest.raises(ConfigError, match=r"on\('accounts'\)\.concurrency"):
        Connector(config(source)).on("accounts", concurrency=0)


async def test_attach_and_detach_while_eight_writers_write(
        source: tuple[str, str], db: asyncpg.Connection) -> None:
    """A table nobody captures: subscribing installs its capture and the handler gets every
    change committed after subscribe returned and none committed before it was called;
    detaching stops the calls and removes the capture."""
    url = source[0]
    got: list[int] = []
    stop = asyncio.Event()

    async def writer() -> None:
        conn = await asyncpg.connect(url)
        try:
            while not stop.is_set():
                await conn.execute("INSERT INTO accounts (owner) VALUES ('w')")
        finally:
            await conn.close()

    async def handler(event: ChangeEvent) -> None:
        assert event.new is not None
        got.append(event.new["id"])

    async with Connector(config(source)) as connector:
        writers = [asyncio.create_task(writer()) for _ in range(8)]
        await asyncio.sleep(0.5)
        before = await db.fetchval("SELECT pg_current_snapshot()")
        sub = await connector.subscribe("accounts", handler, operations=["insert"])
        after = await db.fetchval("SELECT pg_current_snapshot()")
        await asyncio.sleep(1.0)
        until = await db.fetchval("SELECT pg_current_snapshot()")
        await wait_until(lambda: len(got) > 0, 15, "the handler's calls")
        # Everything committed by `until` reaches the handler before detach.
        expected = {r["id"] for r in await db.fetch(
            "SELECT id FROM accounts WHERE pg_visible_in_snapshot(tx, $1) "
            "AND NOT pg_visible_in_snapshot(tx, $2)", until, after)}
        await wait_until(lambda: expected <= set(got), 20, "the handler's calls")
        await sub.detach()
        calls = len(got)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*writers)
        assert len(got) == calls, "calls after detach returned"
        early = {r["id"] for r in await db.fetch(
            "SELECT id FROM accounts WHERE pg_visible_in_snapshot(tx, $1)", before)}
    assert early and not early & set(got), "changes from before subscribe was called"
    assert len(got) == len(set(got))
    # The capture went with the last subscription.
    if source[1] == "trigger":
        assert await db.fetchval("SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                                 "'accounts'::regclass AND NOT tgisinternal") == 0
    else:
        assert await db.fetchval("SELECT count(*) FROM pg_publication_tables "
                                 "WHERE tablename = 'accounts'") == 0


async def test_a_dead_letter_retried_reaches_the_running_handler(
        source: tuple[str, str], db: asyncpg.Connection) -> None:
    broken = True
    handled: list[str] = []
    connector = Connector(config(source))

    @connector.on("accounts", "insert", retry={"max_attempts": 1})
    async def sometimes(event: ChangeEvent) -> None:
        if broken:
            raise LookupError("no such customer yet")
        assert event.new is not None
        handled.append(event.new["owner"])

    async with connector:
        await db.execute("INSERT INTO accounts (owner) VALUES ('early')")
        await wait_until_dead(db, 1)
        broken = False
        ids = [r["id"] for r in await db.fetch("SELECT id FROM pgconnector.dead_letters")]
        assert await dead_letters.retry(db, "pgconnector", ids) == 1
        await wait_until(lambda: handled == ["early"], 15, "the retried dead letter")
    assert await db.fetchval("SELECT count(*) FROM pgconnector.dead_letters") == 0


async def test_stop_waits_for_a_running_call(source: tuple[str, str],
                                             db: asyncpg.Connection) -> None:
    started, finished = asyncio.Event(), asyncio.Event()
    connector = Connector(config(source), shutdown_timeout=10)

    @connector.on("accounts", "insert")
    async def slow(event: ChangeEvent) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.set()

    async with connector:
        await db.execute("INSERT INTO accounts (owner) VALUES ('x')")
        await asyncio.wait_for(started.wait(), 15)
    assert finished.is_set()  # stop() let the call finish; its batch was acknowledged
    if source[1] == "trigger":
        assert await db.fetchval("SELECT count(*) FROM pgconnector.outbox") == 0
