"""Operators (README: Operators) on real PostgreSQL, both sources: EventStreamex's example
(posts, comments, post_with_comments_counts) kept equal to a fresh recomputation, key moves,
delete_with, failures isolated and dead-lettered, chains, loops refused, Python operators,
truncates, and rebuilds while changes stream."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from bench.operators import MERGE, TABLES  # EventStreamex's example, as the bench runs it
from connector import ConfigError, Connector
from connector.store import dead_letters
from connector.store import operators as operator_store
from tests.e2e.support import wait_until

# What the derived table must hold: a fresh recomputation from posts and comments.
TRUTH = """
SELECT p.id, p.title, count(c.id)::int AS comments_count
FROM posts p LEFT JOIN comments c ON c.post_id = p.id GROUP BY p.id, p.title ORDER BY p.id
"""
DERIVED = "SELECT id, title, comments_count FROM post_with_comments_counts ORDER BY id"


def counts_operator(**extra: Any) -> dict[str, Any]:
    return {"name": "post_with_comments_counts",
            "tables": {"public.posts": "id", "public.comments": "post_id"},
            "sql": MERGE, "delete_with": ["public.posts"],
            "target": {"table": "public.post_with_comments_counts", "key": "id"}, **extra}


@pytest.fixture
async def db(source: tuple[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(source[0])
    await conn.execute(TABLES)
    yield conn
    await conn.close()


def config(source: tuple[str, str], *operators: dict[str, Any], **extra: Any) -> dict[str, Any]:
    url, kind = source
    return {"postgres": {"dsn": url}, "capture": {"source": kind, "poll_interval": 0.1},
            **({"operators": list(operators)} if operators else {}), **extra}


async def rows(conn: asyncpg.Connection, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await conn.fetch(sql)]


async def converged(conn: asyncpg.Connection, timeout: float = 20.0) -> None:
    """Wait until the derived table equals a fresh recomputation."""
    last: list[Any] = []

    async def same() -> bool:
        nonlocal last
        truth, derived = await rows(conn, TRUTH), await rows(conn, DERIVED)
        last = [truth, derived]
        return truth == derived

    try:
        await wait_until(same, timeout, "the derived table equal to a recomputation",
                         interval=0.05)
    except AssertionError:
        raise AssertionError(f"truth vs derived:\n{last[0]}\n{last[1]}") from None


async def test_the_derived_table_follows_inserts_updates_moves_and_deletes(
        source: tuple[str, str], db: asyncpg.Connection) -> None:
    async with Connector(config(source, counts_operator())):
        await db.execute("INSERT INTO posts (title) VALUES ('a'), ('b'), ('c')")
        await db.execute("INSERT INTO comments (post_id, body) VALUES (1, 'x'), (1, 'y'), "
                         "(2, 'z')")
        await converged(db)
        assert await rows(db, DERIVED) == [(1, "a", 2), (2, "b", 1), (3, "c", 0)]
        # A comment moves from post 1 to post 2: both are recounted.
        await db.execute("UPDATE comments SET post_id = 2 WHERE body = 'x'")
        await db.execute("UPDATE posts SET title = 'B' WHERE id = 2")
        await converged(db)
        assert await rows(db, DERIVED) == [(1, "a", 1), (2, "B", 2), (3, "c", 0)]
        # delete_with: a deleted post deletes its row (its comments go by the cascade).
        await db.execute("DELETE FROM posts WHERE id = 2")
        await converged(db)
        assert await rows(db, DERIVED) == [(1, "a", 1), (3, "c", 0)]
        # Changes of one key within one transaction (and one batch) end where they should.
        async with db.transaction():
            await db.execute("INSERT INTO posts (id, title) VALUES (10, 'ten')")
            await db.execute("INSERT INTO comments (post_id, body) SELECT 10, 'c' || g "
                             "FROM generate_series(1, 50) g")
            await db.execute("DELETE FROM comments WHERE post_id = 10 AND body = 'c7'")
            await db.execute("UPDATE posts SET title = 'TEN' WHERE id = 10")
        await converged(db)
        assert (10, "TEN", 49) in await rows(db, DERIVED)
        # Deleted and re-created in one transaction: the row is deleted, then recomputed.
        async with db.transaction():
            await db.execute("DELETE FROM posts WHERE id = 3")
            await db.execute("INSERT INTO posts (id, title) VALUES (3, 'again')")
        await converged(db)
        assert (3, "again", 0) in await rows(db, DERIVED)


async def test_a_failing_operator_dead_letters_while_the_others_go_on(
        source: tuple[str, str], db: asyncpg.Connection) -> None:
    """``fragile`` fails for every third post (division by zero): those changes are retried,
    then dead-lettered under operator:fragile with the SQL error; the counts operator and a
    handler get every change meanwhile."""
    await db.execute("CREATE TABLE fragile (id int PRIMARY KEY, inverse int)")
    fragile = {"name": "fragile", "tables": {"public.posts": "id"},
               "sql": "INSERT INTO fragile VALUES ($1, 1 / ($1 % 3)) ON CONFLICT (id) DO "
                      "UPDATE SET inverse = excluded.inverse",
               # past the engine's 4 quick tries: parked, then retried by the drain
               "retry": {"max_attempts": 6, "initial_backoff": 0.01, "max_backoff": 0.05}}
    handled: list[int] = []
    connector = Connector(config(source, fragile, counts_operator()))

    @connector.on("public.posts", "insert")
    async def record(event: Any) -> None:
        handled.append(event.new["id"])

    async with connector:
        for i in range(1, 10):
            await db.execute("INSERT INTO posts (id, title) VALUES ($1, 't')", i)
        await db.execute("INSERT INTO comments (post_id) SELECT g % 9 + 1 FROM "
                         "generate_series(1, 30) g")
        await converged(db)
        await wait_until(lambda: sorted(handled) == list(range(1, 10)), 10, "every handler call")

        async def applied() -> list[int]:
            return [r["id"] for r in await db.fetch("SELECT id FROM fragile ORDER BY id")]

        async def all_but_thirds() -> bool:
            return await applied() == [1, 2, 4, 5, 7, 8]

        # (behind its failures: parked and drained in order)
        await wait_until(all_but_thirds, 20, "fragile applying every other post")

        async def dead() -> list[Any]:
            schema = "pgconnector"
            picked = await dead_letters.select(db, schema, dead_letters.Selection(
                publisher="operator:fragile"))
            return list(await dead_letters.show(db, schema, list(picked)))

        async def three_dead() -> bool:
            return len(await dead()) == 3

        await wait_until(three_dead, 20, "three dead letters under operator:fragile")
        letters = await dead()
        assert {asyncpg_json(r)["new"]["id"] for r in letters} == {3, 6, 9}
        assert all("division by zero" in r["error"] and "22012" in r["error"] for r in letters)
        assert all(r["attempts"] == 6 for r in letters)
        # Still streaming for everyone after the failures.
        await db.execute("INSERT INTO posts (id, title) VALUES (10, 't'), (12, 't')")
        await wait_until(lambda: 10 in handled, 10, "the handler after the failures")
        await converged(db)

        async def ten_applied() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM fragile WHERE id = 10"))

        await wait_until(ten_applied, 10, "fragile applying again after the failures")
        status = await operator_store.status(db, "pgconnector")
        by_name = {s["name"]: s for s in status}
        assert by_name["fragile"]["dead_letters"] >= 3
        assert by_name["post_with_comments_counts"]["dead_letters"] == 0
        assert by_name["post_with_comments_counts"]["changes"] >= 39


def asyncpg_json(row: Any) -> dict[str, Any]:
    import json
    payload: dict[str, Any] = json.loads(row["payload"])
    return payload


async def test_parked_changes_apply_exactly_once_when_the_operator_recovers(
        source: tuple[str, str], db: asyncpg.Connection) -> None:
    """A counter (not idempotent) fails until ``gate`` has a row: its changes wait parked,
    drained later on transactions that also settle them, so each counts exactly once."""
    await db.execute("CREATE TABLE gate (open bool); "
                     "CREATE TABLE tally (post_id int PRIMARY KEY, n int NOT NULL)")
    counter = {"name": "tally", "tables": {"public.comments": "post_id"}, "coalesce": False,
               "sql": "INSERT INTO tally SELECT $1, 1 / (SELECT count(*) FROM gate)::int "
                      "ON CONFLICT (post_id) DO UPDATE SET n = tally.n + 1",
               "retry": {"initial_backoff": 0.05, "max_backoff": 0.2, "max_attempts": 1000}}
    async with Connector(config(source, counter)) as connector:
        await db.execute("INSERT INTO posts (id, title) SELECT g, 't' FROM "
                         "generate_series(1, 5) g")
        for _ in range(4):
            await db.execute("INSERT INTO comments (post_id) SELECT g % 5 + 1 FROM "
                             "generate_series(1, 25) g")
        await wait_until(lambda: "operator:tally" in connector.parked, 15, "tally parked")
        assert await db.fetchval("SELECT count(*) FROM tally") == 0
        await db.execute("INSERT INTO gate VALUES (true)")
        await db.execute("UPDATE comments SET post_id = 1 WHERE id = 1")  # moves 2 -> 1

        async def counted() -> bool:
            return await db.fetchval("SELECT coalesce(sum(n), 0) FROM tally") == 102

        await wait_until(counted, 20, "every change counted")
        await asyncio.sleep(0.5)  # nothing more arrives later
        assert await rows(db, "SELECT post_id, n FROM tally ORDER BY post_id") == [
            (1, 21), (2, 21), (3, 20), (4, 20), (5, 20)]
        await wait_until(lambda: "operator:tally" not in connector.parked, 15, "tally direct")


async def test_a_chain_of_operators_and_the_loop_check(
        source: tuple[str, str], db: asyncpg.Connection) -> None:
    """big_posts is derived from post_with_comments_counts, itself derived: the second
    operator runs on the first one's changes. An operator writing (through another) one of
    its own tables is refused before anything is installed."""
    await db.execute("CREATE TABLE big_posts (id int PRIMARY KEY, comments_count int)")
    big = {"name": "big_posts", "tables": {"public.post_with_comments_counts": "id"},
           "sql": """
               WITH src AS (SELECT id, comments_count FROM post_with_comments_counts
                            WHERE id = $1 AND comments_count >= 2),
                    gone AS (DELETE FROM big_posts b WHERE b.id = $1
                             AND NOT EXISTS (SELECT 1 FROM src))
               INSERT INTO big_posts SELECT id, comments_count FROM src
               ON CONFLICT (id) DO UPDATE SET comments_count = excluded.comments_count"""}
    async with Connector(config(source, counts_operator(), big)):
        await db.execute("INSERT INTO posts (id, title) SELECT g, 't' FROM "
                         "generate_series(1, 4) g")
        await db.execute("INSERT INTO comments (post_id) VALUES (1), (1), (1), (2), (3), (3)")
        await converged(db)
        want = [(1, 3), (3, 2)]

        async def chained() -> bool:
            return await rows(db, "SELECT * FROM big_posts ORDER BY id") == want

        await wait_until(chained, 15, "big_posts from the derived table's changes")
        await db.execute("DELETE FROM comments WHERE post_id = 3 AND id = 5")
        await db.execute("DELETE FROM posts WHERE id = 1")
        want = []
        await wait_until(chained, 15, "big_posts after deletes")

    # post_with_comments_counts -> back into posts: a loop, found from the SQL's plan.
    loop = {"name": "title_back", "tables": {"public.post_with_comments_counts": "id"},
            "sql": "UPDATE posts SET title = d.title FROM post_with_comments_counts d "
                   "WHERE d.id = $1 AND posts.id = d.id"}
    with pytest.raises(ConfigError) as caught:
        async with Connector(config(source, counts_operator(), loop,
                                    postgres={"dsn": source[0], "schema": "looped"})):
            pass
    assert caught.value.problems == [
        'operators[0].tables: post_with_comments_counts -> title_back writes public.posts, '
        "one of this operator's own tables: a loop (each change would trigger another)",
        'operators[1].tables: title_back -> post_with_comments_counts writes '
        'public.post_with_comments_counts, one of this operator\'s own tables: a loop '
        '(each change would trigger another)']
    assert await db.fetchval("SELECT to_regnamespace('looped')") is None  # nothing installed


async def test_a_python_operator_runs_per_key_with_the_keys_events(
        source: tuple[str, str], db: asyncpg.Connection) -> None:
    calls: list[tuple[int, list[str]]] = []
    connector = Connector(config(source))

    @connector.operator(tables={"public.posts": "id", "public.comments": "post_id"})
    async def recount(tx: Any, key: int, events: list[Any]) -> None:
        calls.append((key, [f"{e.table}.{e.op}" for e in events]))
        await tx.execute(MERGE, key)

    async with connector:
        async with db.transaction():  # one transaction: one batch
            await db.execute("INSERT INTO posts (id, title) VALUES (1, 'a'), (2, 'b')")
            await db.execute("INSERT INTO comments (post_id) VALUES (1), (1), (2)")
            await db.execute("UPDATE comments SET post_id = 2 WHERE id = 1")
        await converged(db)
        assert await rows(db, DERIVED) == [(1, "a", 1), (2, "b", 2)]
        assert sorted(calls) == [
            (1, ["posts.insert", "comments.insert", "comments.insert", "comments.update"]),
            (2, ["posts.insert", "comments.insert", "comments.update"])]
        assert isinstance(calls[0][0], int)


async def test_a_truncate_rebuilds_and_a_rebuild_runs_while_changes_stream(
        source: tuple[str, str], db: asyncpg.Connection) -> None:
    # Rows from before the operator existed: only a rebuild brings them in.
    await db.execute("INSERT INTO posts (id, title) SELECT g, 'p' || g FROM "
                     "generate_series(1, 300) g")
    await db.execute("INSERT INTO comments (post_id) SELECT g % 300 + 1 FROM "
                     "generate_series(1, 900) g")
    cfg = config(source, counts_operator())
    async with Connector(cfg):
        # Stale rows a rebuild must fix or remove.
        await db.execute("INSERT INTO post_with_comments_counts VALUES (1, 'stale', 99), "
                         "(5000, 'orphan', 1)")
        rng = random.Random(7)
        stop = asyncio.Event()

        async def write() -> int:
            writes = 0
            conn = await asyncpg.connect(source[0])
            try:
                while not stop.is_set():
                    post = rng.randint(1, 320)
                    if rng.random() < 0.3:
                        await conn.execute("INSERT INTO posts (id, title) VALUES ($1, 'n') ON "
                                           "CONFLICT (id) DO UPDATE SET title = 'u'", post)
                    elif rng.random() < 0.5:
                        await conn.execute("INSERT INTO comments (post_id) SELECT id FROM "
                                           "posts WHERE id = $1", post)
                    else:
                        await conn.execute("DELETE FROM comments WHERE id = (SELECT min(id) "
                                           "FROM comments WHERE post_id = $1)", post)
                    writes += 1
            finally:
                await conn.close()
            return writes

        writer = asyncio.create_task(write())
        await asyncio.sleep(0.3)
        conn = await asyncpg.connect(source[0])
        try:
            done: list[tuple[int, int]] = []
            keys = await operator_store.rebuild(
                conn, _loaded(cfg), "post_with_comments_counts", chunk=50,
                progress=lambda d, t: done.append((d, t)))
        finally:
            await conn.close()
        await asyncio.sleep(0.3)
        stop.set()
        assert await writer > 20
        assert keys >= 300 and done[-1] == (keys, keys) and len(done) > 5
        await converged(db)

        # A truncate (cascading to comments) rebuilds in the batch's transaction.
        await db.execute("TRUNCATE posts CASCADE")
        await converged(db)
        assert await rows(db, DERIVED) == []
        await db.execute("INSERT INTO posts (id, title) VALUES (1, 'back')")
        await converged(db)


def _loaded(data: dict[str, Any]) -> Any:
    from connector.config import from_dict

    return from_dict(data)
