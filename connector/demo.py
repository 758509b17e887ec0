"""``pgconnector demo``: the whole pipeline end to end with no setup.

Finds a PostgreSQL (DATABASE_URL, the PG* variables, the local server) or starts a throwaway
one from the installed binaries, creates a demo table, streams its changes to stdout (and to
Redis when one answers), makes a few changes, shows them arriving, and removes everything it
created.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import asyncpg
import orjson

from connector import db
from connector.config import from_dict as config_from_dict
from connector.connector import Connector
from connector.store.install import uninstall
from connector.vocabulary import PostgresConfig

DEMO_SCHEMA = "pgconnector_demo"
CDC_SCHEMA = "pgconnector_demo_cdc"


def say(text: str) -> None:
    # The demo's narration is user-facing output, not a log event: plain text on stderr,
    # next to the JSON lines the stdout publisher prints.
    sys.stderr.write(f"demo: {text}\n")
    sys.stderr.flush()


def _candidate_dsns() -> Iterator[str | None]:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    yield None  # libpq defaults and PG* variables
    if not any(k in os.environ for k in ("PGHOST", "PGUSER", "PGDATABASE")):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"


async def _find_postgres() -> PostgresConfig | None:
    for dsn in _candidate_dsns():
        cfg = PostgresConfig(dsn=dsn, schema=CDC_SCHEMA, connect_timeout=3)
        try:
            conn = await db.connect(cfg)
        except db.DatabaseError as exc:
            say(f"no PostgreSQL at {db.describe_target(cfg)} ({exc})")
            continue
        await conn.close()
        return cfg
    return None


# Debian's layout: one directory per installed major version, each with its own bin/.
PG_VERSIONS_DIR = "/usr/lib/postgresql"
_VERSION = re.compile(r"\d+(?:\.\d+)*")


def newest_version(names: Iterable[str]) -> str | None:
    """The name among ``names`` (version directories: "9.6", "15", "16") that is the newest
    PostgreSQL by version number, not by string ("16" is newer than "9.6"); names that are no
    version number are not candidates. None when none is."""
    versions = {name: tuple(int(part) for part in name.split("."))
                for name in names if _VERSION.fullmatch(name)}
    return max(versions, key=versions.__getitem__, default=None)


def pg_bindir() -> str | None:
    """The newest installed PostgreSQL's binaries: pg_config's, else the newest version's in
    PG_VERSIONS_DIR, else those of the initdb on PATH; None when there are none."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             check=True).stdout.strip()
        if os.path.exists(os.path.join(out, "initdb")):
            return out
    installed: list[str] = []
    with contextlib.suppress(OSError):
        installed = [name for name in os.listdir(PG_VERSIONS_DIR)
                     if os.path.exists(os.path.join(PG_VERSIONS_DIR, name, "bin", "initdb"))]
    newest = newest_version(installed)
    if newest is not None:
        return os.path.join(PG_VERSIONS_DIR, newest, "bin")
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresConfig]:
    """A private PostgreSQL cluster in a temporary directory, removed afterwards."""
    bindir = pg_bindir()
    if bindir is None:
        raise db.DatabaseError("no PostgreSQL reachable and no PostgreSQL binaries installed "
                               "to start one (install postgresql, or set DATABASE_URL)")
    tmp = tempfile.mkdtemp(prefix="pgconnector-demo-")
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(tmp, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = os.path.join(tmp, "data")
    say(f"starting a throwaway PostgreSQL in {tmp} on port {port}")
    subprocess.run([*run_as, f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, f"{bindir}/pg_ctl", "-D", data, "-w", "-l",
                    os.path.join(tmp, "log"), "-o",
                    f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        yield PostgresConfig(dsn=f"postgresql://postgres@127.0.0.1:{port}/postgres",
                             schema=CDC_SCHEMA)
    finally:
        subprocess.run([*run_as, f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.asynccontextmanager
async def _postgres() -> AsyncIterator[PostgresConfig]:
    found = await _find_postgres()
    if found is not None:
        yield found
        return
    with throwaway_postgres() as cfg:
        yield cfg


async def _redis_url(explicit: str | None) -> str | None:
    url = explicit or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        await client.ping()
        return url
    except Exception:
        if explicit:
            raise
        say("no Redis answered; publishing to stdout only")
        return None
    finally:
        await client.aclose()


async def run_demo(changes: int = 5, redis_url: str | None = None) -> int:
    url = await _redis_url(redis_url)
    async with _postgres() as pg:
        return await _run(pg, url, max(changes, 1))


async def _run(pg: PostgresConfig, redis_url: str | None, changes: int) -> int:
    conn = await db.connect(pg)
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {DEMO_SCHEMA}")
    await conn.execute(f"DROP TABLE IF EXISTS {DEMO_SCHEMA}.users")
    await conn.execute(f"CREATE TABLE {DEMO_SCHEMA}.users (id serial PRIMARY KEY, "
                       "name text NOT NULL, plan text, updated_at timestamptz DEFAULT now())")
    publishers: dict[str, Any] = {"console": {"type": "stdout"}}
    routes: list[dict[str, Any]] = [
        {"table": f"{DEMO_SCHEMA}.users", "publisher": "console", "channel": "users:{op}"}]
    if redis_url:
        publishers["cache"] = {"type": "redis", "url": redis_url}
        routes.append({"table": f"{DEMO_SCHEMA}.users", "publisher": "cache",
                       "channel": "demo:users:{id}"})
    config = config_from_dict({"postgres": {k: v for k, v in
                                            (("dsn", pg.dsn), ("schema", pg.schema)) if v},
                               "publishers": publishers, "routes": routes})
    received: list[dict[str, Any]] = []
    sub_task = None
    if redis_url:
        import redis.asyncio as aioredis

        sub_client = aioredis.Redis.from_url(redis_url)
        pubsub = sub_client.pubsub()
        await pubsub.psubscribe("demo:users:*")

        async def listen() -> None:
            async for msg in pubsub.listen():
                if msg["type"] == "pmessage":
                    received.append(orjson.loads(msg["data"]))

        sub_task = asyncio.create_task(listen())
    connector = Connector(config)
    made = 0
    try:
        await connector.start()
        say(f"streaming {DEMO_SCHEMA}.users to stdout"
            + (" and Redis channels demo:users:<id>" if redis_url else ""))
        made += await _make_changes(conn, changes)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (  # noqa: ASYNC110 - polls two counters
                connector.stats.events < made or (redis_url and len(received) < made - 1)):
            await asyncio.sleep(0.05)
    finally:
        await connector.stop()
        if sub_task is not None:
            sub_task.cancel()
            await pubsub.aclose()
            await sub_client.aclose()
        await uninstall(conn, CDC_SCHEMA, force=True)
        await conn.execute(f"DROP SCHEMA {DEMO_SCHEMA} CASCADE")
        await conn.close()
    say(f"{made} changes made, {connector.stats.events} delivered"
        + (f", {len(received)} received by a Redis subscriber (the truncate has no row id, "
           "so it went to demo:users:*)" if redis_url else ""))
    say("cleaned up: demo table and connector objects removed")
    return 0 if connector.stats.events >= made else 1


async def _make_changes(conn: asyncpg.Connection, n: int) -> int:
    made = 0
    for i in range(n):
        await conn.execute(f"INSERT INTO {DEMO_SCHEMA}.users (name, plan) VALUES ($1, 'free')",
                           f"user{i + 1}")
        made += 1
    await conn.execute(f"UPDATE {DEMO_SCHEMA}.users SET plan = 'pro', updated_at = now() "
                       "WHERE id = 1")
    await conn.execute(f"DELETE FROM {DEMO_SCHEMA}.users WHERE id = $1", n)
    await conn.execute(f"TRUNCATE {DEMO_SCHEMA}.users")
    return made + 3


async def run_live_demo(port: int = 8765, seconds: float | None = None) -> int:
    """``pgconnector demo --live``: the demo table streamed to the live endpoint (anonymous),
    changes made every half second, the demo page's URL printed; until Ctrl-C (or
    ``seconds``), then everything is removed."""
    async with _postgres() as pg:
        conn = await db.connect(pg)
        table = f"{DEMO_SCHEMA}.users"
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {DEMO_SCHEMA}")
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, name text NOT NULL, "
                           "plan text, score int, updated_at timestamptz DEFAULT now())")
        config = config_from_dict({
            "postgres": {k: v for k, v in (("dsn", pg.dsn), ("schema", CDC_SCHEMA)) if v},
            "capture": {"poll_interval": 0.1},
            "live": {"host": "127.0.0.1", "port": port, "tables": [table],
                     "auth": {"anonymous": True}}})
        connector = Connector(config)
        try:
            await connector.start()
            assert connector.live is not None
            say(f"live demo: open http://127.0.0.1:{connector.live.port}/live/demo"
                f"?table={table} (Ctrl-C to stop)")
            await _keep_changing(conn, table, seconds)
        except asyncio.CancelledError:
            pass
        finally:
            await connector.stop()
            await uninstall(conn, CDC_SCHEMA, force=True)
            await conn.execute(f"DROP SCHEMA {DEMO_SCHEMA} CASCADE")
            await conn.close()
            say("cleaned up: demo table and connector objects removed")
    return 0


async def _keep_changing(conn: asyncpg.Connection, table: str, seconds: float | None) -> None:
    """Insert, update and delete demo rows at random, twice a second (at most 12 rows)."""
    rng = random.Random()
    names = ["ada", "grace", "alan", "edsger", "barbara", "donald", "ken", "margaret"]
    deadline = None if seconds is None else time.monotonic() + seconds
    while deadline is None or time.monotonic() < deadline:
        ids = [r["id"] for r in await conn.fetch(f"SELECT id FROM {table}")]
        roll = rng.random()
        if not ids or (roll < 0.4 and len(ids) < 12):
            await conn.execute(f"INSERT INTO {table} (name, plan, score) VALUES ($1, $2, $3)",
                               rng.choice(names), rng.choice(["free", "pro"]),
                               rng.randrange(100))
        elif roll < 0.85:
            await conn.execute(f"UPDATE {table} SET score = $2, plan = $3, updated_at = now() "
                               "WHERE id = $1", rng.choice(ids), rng.randrange(100),
                               rng.choice(["free", "pro"]))
        else:
            await conn.execute(f"DELETE FROM {table} WHERE id = $1", rng.choice(ids))
        await asyncio.sleep(0.5)
