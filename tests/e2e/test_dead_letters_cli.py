"""``pgconnector dead-letters list|retry|purge`` against a running daemon: a change Redis
refuses for good is dead-lettered, listed, and delivered once the cause is fixed and it is
retried; purge drops the rest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from tests.e2e.support import Daemon, make_config, run, wait_until, write_config

MakeDaemon = Callable[..., Daemon]


async def dead_count(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM pgconnector.dead_letters"))


async def test_list_retry_purge(database: str, pg: asyncpg.Connection, redis_url: str,
                                channel_prefix: str, daemons: MakeDaemon,
                                tmp_path: Path) -> None:
    await pg.execute("CREATE TABLE public.items (id int PRIMARY KEY, name text NOT NULL)")
    await pg.execute("CREATE TABLE public.notes (id int PRIMARY KEY)")
    client = aioredis.Redis.from_url(redis_url)
    keys = [f"{channel_prefix}:items:{i}" for i in (1, 2, 3)] + [f"{channel_prefix}:notes"]
    # Keys of the wrong type make XADD fail for those channels only: never deliverable.
    await client.set(keys[1], "not a stream")
    await client.set(keys[3], "not a stream")
    config = write_config(tmp_path, make_config(
        database, publishers={"cache": {"type": "redis", "url": redis_url, "mode": "stream"}},
        routes=[{"table": "public.items", "publisher": "cache",
                 "channel": channel_prefix + ":items:{id}"},
                {"table": "public.notes", "publisher": "cache",
                 "channel": channel_prefix + ":notes"}]))
    try:
        daemon = await daemons(config, tmp_path).start()
        await daemon.wait_active()
        await pg.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        await pg.execute("INSERT INTO notes VALUES (7)")
        await wait_until(lambda: dead_count_is(pg, 2), 15, "two dead letters")

        listed = await run("dead-letters", "list", "-c", config)
        assert listed.code == 0, listed
        lines = listed.stdout.splitlines()
        assert len(lines) == 2 and "public.items" in lines[0] and "WRONGTYPE" in lines[0]
        assert "2 dead letter(s)" in listed.stderr

        as_json = await run("dead-letters", "list", "-c", config, "--json",
                            "--table", "items")
        assert as_json.code == 0, as_json
        [item] = [json.loads(line) for line in as_json.stdout.splitlines()]
        assert item["payload"]["new"] == {"id": 2, "name": "b"}
        assert item["channel"] == keys[1] and item["attempts"] == 1

        for args in (["--older-than", "1h"], ["--publisher", "other"],
                     ["--table", "public.nope"]):
            none = await run("dead-letters", "list", "-c", config, *args)
            assert none.code == 0 and none.stdout == "", (args, none)
        bad = await run("dead-letters", "list", "-c", config, "--older-than", "soon")
        assert bad.code == 2 and bad.stderr_lines == [
            "error: --older-than: 'soon' is not a duration (e.g. 90, 30s, 15m, 2h, 7d)"], bad

        # Fix the cause for the row, retry that one only: the running daemon delivers it.
        await client.delete(keys[1])
        retried = await run("dead-letters", "retry", "-c", config, "--id", str(item["id"]))
        assert retried.code == 0 and retried.stdout.strip() == "re-queued 1 dead letter(s)"
        await wait_until(lambda: stream_len(client, keys[1], 1), 15, "the retried change")
        [(_, fields)] = await client.xrange(keys[1])
        assert json.loads(fields[b"event"])["new"] == {"id": 2, "name": "b"}
        assert json.loads(fields[b"event"])["id"] == item["event_id"]  # the same change
        assert await dead_count(pg) == 1

        unsafe = await run("dead-letters", "purge", "-c", config)
        assert unsafe.code == 2 and "--all" in unsafe.stderr and await dead_count(pg) == 1
        purged = await run("dead-letters", "purge", "-c", config, "--all")
        assert purged.code == 0 and purged.stdout.strip() == "purged 1 dead letter(s)"
        assert await dead_count(pg) == 0
        assert (await daemon.terminate())[0] == 0
    finally:
        await client.delete(*keys)
        await client.aclose()


async def dead_count_is(pg: asyncpg.Connection, n: int) -> bool:
    return await dead_count(pg) == n


async def stream_len(client: aioredis.Redis, key: str, n: int) -> bool:
    return bool(await client.exists(key)) and await client.xlen(key) == n
