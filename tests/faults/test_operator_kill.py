"""Operators exactly once under SIGKILL: EventStreamex's example (posts, comments,
post_with_comments_counts) while 4 writers make 5,000 random inserts, updates (comments moving
between posts, title changes) and deletes of both tables, the daemon SIGKILLed three times
during the stream: the derived table equals a fresh recomputation, and a counter operator
(``n = n + 1`` per change, not idempotent) counted every change exactly once. Both sources.

The counter's truth is kept by a plain PostgreSQL trigger on comments with the operator's
own key rules, in the writers' transactions: exact whatever commits or rolls back."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from bench.operators import MERGE, TABLES
from tests.e2e.support import base_env, daemon_factory

pytestmark = pytest.mark.timeout(300)

TOTAL = 5_000
WRITERS = 4
KILLS = 3

# EventStreamex's tables (as the bench makes them), the counter and its truth.
SCHEMA = TABLES + """
CREATE TABLE comment_changes (post_id int PRIMARY KEY, n int NOT NULL);
CREATE TABLE comment_changes_truth (post_id int PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION count_truth(post int) RETURNS void LANGUAGE sql AS $$
    INSERT INTO comment_changes_truth VALUES (post, 1)
    ON CONFLICT (post_id) DO UPDATE SET n = comment_changes_truth.n + 1 $$;
CREATE FUNCTION truth() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM count_truth(NEW.post_id);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM count_truth(OLD.post_id);
    ELSE
        IF OLD.post_id IS DISTINCT FROM NEW.post_id THEN
            PERFORM count_truth(OLD.post_id);
        END IF;
        PERFORM count_truth(NEW.post_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER truth AFTER INSERT OR UPDATE OR DELETE ON comments
    FOR EACH ROW EXECUTE FUNCTION truth();
INSERT INTO posts (title) SELECT 'post ' || g FROM generate_series(1, 40) g;
"""

TRUTH = """
SELECT p.id, p.title, count(c.id)::int FROM posts p LEFT JOIN comments c ON c.post_id = p.id
GROUP BY p.id, p.title ORDER BY p.id"""
DERIVED = "SELECT id, title, comments_count FROM post_with_comments_counts ORDER BY id"


def operators() -> list[dict[str, Any]]:
    return [
        {"name": "post_with_comments_counts",
         "tables": {"public.posts": "id", "public.comments": "post_id"},
         "sql": MERGE, "delete_with": ["public.posts"],
         "target": {"table": "public.post_with_comments_counts", "key": "id"}},
        {"name": "comment_changes", "tables": {"public.comments": "post_id"},
         "coalesce": False,
         "sql": "INSERT INTO comment_changes VALUES ($1, 1) "
                "ON CONFLICT (post_id) DO UPDATE SET n = comment_changes.n + 1"},
    ]


class Writers:
    """``WRITERS`` connections making random changes until ``TOTAL`` committed; a change a
    concurrent one made impossible (its post deleted meanwhile, a deadlock) rolls back and
    does not count."""

    def __init__(self, url: str, seed: int) -> None:
        self.url = url
        self.rng = random.Random(seed)
        self.done = 0
        self.failed = 0

    async def run(self) -> None:
        await asyncio.gather(*(self._writer(i) for i in range(WRITERS)))

    async def _writer(self, index: int) -> None:
        rng = random.Random(self.rng.random())
        conn = await asyncpg.connect(self.url)
        try:
            while self.done < TOTAL:
                try:
                    await self._change(conn, rng)
                    self.done += 1
                except (asyncpg.ForeignKeyViolationError, asyncpg.DeadlockDetectedError,
                        asyncpg.UniqueViolationError):
                    self.failed += 1
                # about 450 changes/s in all: the stream lasts ~11 s, so a restart (about a
                # second) never outlasts what is left of it after the last kill's mark
                await asyncio.sleep(rng.uniform(0.004, 0.012))
        finally:
            await conn.close()

    async def _change(self, conn: asyncpg.Connection, rng: random.Random) -> None:
        post = "(SELECT id FROM posts ORDER BY random() LIMIT 1)"
        comment = "(SELECT id FROM comments ORDER BY random() LIMIT 1)"
        roll = rng.random()
        if roll < 0.08:
            await conn.execute("INSERT INTO posts (title) VALUES ($1)", f"new {rng.random()}")
        elif roll < 0.16:
            await conn.execute(f"UPDATE posts SET title = $1 WHERE id = {post}",
                               f"title {rng.random()}")
        elif roll < 0.20:
            await conn.execute(f"DELETE FROM posts WHERE id = {post}")
        elif roll < 0.50:
            await conn.execute(f"INSERT INTO comments (post_id, body) VALUES ({post}, 'c')")
        elif roll < 0.75:  # a comment moves to another post
            await conn.execute(f"UPDATE comments SET post_id = {post} WHERE id = {comment}")
        elif roll < 0.85:
            await conn.execute(f"UPDATE comments SET body = 'edited' WHERE id = {comment}")
        elif roll < 0.95:
            await conn.execute(f"DELETE FROM comments WHERE id = {comment}")
        elif roll < 0.97:  # a large transaction: its changes span several batches
            await conn.execute(f"UPDATE comments SET post_id = {post} WHERE id IN "
                               "(SELECT id FROM comments ORDER BY random() LIMIT 150)")
        else:  # several changes in one transaction
            async with conn.transaction():
                await conn.execute(f"INSERT INTO comments (post_id, body) SELECT {post}, 'm' "
                                   "FROM generate_series(1, 5)")
                await conn.execute(f"UPDATE comments SET post_id = {post} WHERE id = {comment}")
                await conn.execute(f"UPDATE posts SET title = 'tx' WHERE id = {post}")


@pytest.mark.slow
@pytest.mark.parametrize("source", ["trigger", "wal"])
async def test_sigkill_three_times_keeps_operators_exact(
        source: str, logical_database: str, tmp_path: Path) -> None:
    url = logical_database
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    conn = await asyncpg.connect(url)
    await conn.execute(SCHEMA)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "postgres": {"dsn": url},
        "capture": {"source": source, "batch_size": 50, "poll_interval": 0.1},
        "operators": operators(), "logging": {"format": "json"}}))
    try:
        async with daemon_factory() as make:
            daemon = await make(config, tmp_path, env=base_env()).start()
            await daemon.wait_active()
            writers = Writers(url, seed)
            writing = asyncio.create_task(writers.run())
            # The posts from before the daemon: a rebuild brings them in, while the writers
            # write and the daemon applies their changes.
            rebuilding = asyncio.create_task(run_rebuild(tmp_path, config))
            marks = sorted(rng.sample(range(TOTAL // 8, TOTAL * 3 // 4, 50), KILLS))
            writing_at_kill = 0
            for mark in marks:
                while writers.done < mark:
                    assert daemon.running, daemon.stderr()[-3000:]
                    assert not writing.done() or writing.exception() is None
                    await asyncio.sleep(0.01)
                await asyncio.sleep(rng.uniform(0, 0.05))
                await daemon.kill()
                writing_at_kill += not writing.done()
                daemon = await make(config, tmp_path, env=base_env()).start()
                await daemon.wait_active()
            await writing
            await rebuilding
            assert writing_at_kill == KILLS, "a kill came after the writers finished"

            async def settled() -> bool:
                derived = await conn.fetch(DERIVED)
                counted = await conn.fetch("SELECT * FROM comment_changes ORDER BY post_id")
                return (derived == await conn.fetch(TRUTH) and counted == await conn.fetch(
                    "SELECT * FROM comment_changes_truth ORDER BY post_id"))

            for _ in range(600):
                assert daemon.running, daemon.stderr()[-3000:]
                if await settled():
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # nothing more arrives (a late duplicate would)
            truth = [tuple(r) for r in await conn.fetch(TRUTH)]
            derived = [tuple(r) for r in await conn.fetch(DERIVED)]
            counted = dict(await conn.fetch("SELECT * FROM comment_changes"))
            wanted = dict(await conn.fetch("SELECT * FROM comment_changes_truth"))
            code, _ = await daemon.terminate(timeout=15)
            assert code == 0, daemon.stderr()[-3000:]
            dead = await conn.fetchval("SELECT count(*) FROM pgconnector.dead_letters")
    finally:
        await conn.close()
    context = f"seed {seed}, {writers.done} changes, {writers.failed} rolled back"
    assert dead == 0, context
    assert derived == truth, f"{context}: {set(derived) ^ set(truth)}"
    extra = {k: counted.get(k, 0) - n for k, n in wanted.items() if counted.get(k, 0) != n}
    assert counted == wanted, f"{context}: counted - truth per post: {extra}"
    assert sum(wanted.values()) > 2_000, context


async def run_rebuild(tmp_path: Path, config: Path) -> None:
    from tests.e2e.support import run

    result = await run("operators", "rebuild", "post_with_comments_counts", "-c", config,
                       cwd=tmp_path)
    assert result.code == 0, result
