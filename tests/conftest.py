"""Shared fixtures: a fresh PostgreSQL database per test and a Redis, both real.

Connection settings come from DATABASE_URL or the PG* variables (defaults: postgres@127.0.0.1:
5432) and REDIS_URL (default redis://127.0.0.1:6379/0). When those are not set and a Docker
engine answers, throwaway containers are started with testcontainers instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from tests.ably_endpoint import ably_endpoint  # noqa: F401  (the local Ably endpoint fixture)

# Where docker-py looks for the engine when DOCKER_HOST is not set.
DOCKER_SOCKET = "/var/run/docker.sock"


def _docker_available() -> bool:
    """Whether a Docker engine answers (testcontainers would start the servers in it)."""
    if not os.environ.get("DOCKER_HOST") and not os.path.exists(DOCKER_SOCKET):
        return False  # no engine to ask
    import docker

    with warnings.catch_warnings():
        # docker-py (transport/unixconn.py, 7.x) does not close the socket of a connection
        # it could not make; collected here rather than as an error in some later test.
        warnings.simplefilter("ignore", ResourceWarning)
        client = None
        try:
            client = docker.from_env(timeout=2)
            client.ping()
            return True
        except Exception:
            return False
        finally:
            if client is not None:
                client.close()
            gc.collect()


def _local_pg_url() -> str:
    user = os.environ.get("PGUSER", "postgres")
    password = os.environ.get("PGPASSWORD")
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    db = os.environ.get("PGDATABASE", "postgres")
    auth = quote(user) + (":" + quote(password) if password else "")
    if host.startswith("/"):
        return f"postgresql://{auth}@/{db}?host={quote(host)}&port={port}"
    return f"postgresql://{auth}@{host}:{port}/{db}"


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser URL of the server the tests use (its maintenance database)."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
    elif not any(k in os.environ for k in ("PGHOST", "PGPORT")) and _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as pg:
            yield pg.get_connection_url()
    else:
        yield _local_pg_url()


@pytest.fixture(scope="session")
def logical_pg_admin_url() -> Iterator[str]:
    """A superuser URL of a throwaway cluster with wal_level=logical (the wal source), started
    from the installed PostgreSQL binaries: the shared server runs with wal_level=replica."""
    from bench.cluster import PostgresCluster

    cluster = PostgresCluster("wal_level=logical", "max_replication_slots=20",
                              "max_wal_senders=20").init()
    try:
        cluster.start()
        yield cluster.admin_url
    finally:
        cluster.remove()


@pytest.fixture
async def logical_database(logical_pg_admin_url: str) -> AsyncIterator[str]:
    """A new, empty database on the wal_level=logical cluster; its URL. Its replication slots
    are dropped with it."""
    async with temp_database(logical_pg_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
    elif _docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer() as r:
            yield f"redis://{r.get_container_host_ip()}:{r.get_exposed_port(6379)}/0"
    else:
        yield "redis://127.0.0.1:6379/0"


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname)))


@contextlib.asynccontextmanager
async def temp_database(admin_url: str) -> AsyncIterator[str]:
    """A new, empty database; its URL. Dropped afterwards, with its replication slots."""
    name = f"pgc_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(admin_url, name)
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                            " WHERE database = $1 AND NOT active", name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database(pg_admin_url: str) -> AsyncIterator[str]:
    """A new, empty database for this test; its URL. Dropped afterwards."""
    async with temp_database(pg_admin_url) as url:
        yield url


@pytest.fixture
async def pg(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    yield conn
    await conn.close()


@pytest.fixture
def channel_prefix() -> str:
    """A unique prefix so concurrent tests never hear each other on the shared Redis."""
    return f"t{uuid.uuid4().hex[:10]}"


class RedisSubscriber:
    """Collects every message published on channels matching a pattern."""

    def __init__(self, url: str, pattern: str) -> None:
        self.client = aioredis.Redis.from_url(url)
        self.pattern = pattern
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.raw: list[bytes] = []  # the payloads as published (exact numbers)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RedisSubscriber:
        self.pubsub = self.client.pubsub()
        await self.pubsub.psubscribe(self.pattern)
        # Wait for the subscription confirmation, so nothing published after this is missed.
        while (await self.pubsub.get_message(timeout=1.0)) is None:
            pass
        self._task = asyncio.create_task(self._listen())
        return self

    async def _listen(self) -> None:
        async for msg in self.pubsub.listen():
            if msg["type"] == "pmessage":
                self.raw.append(msg["data"])
                self.messages.append((msg["channel"].decode(), orjson.loads(msg["data"])))

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while len(self.messages) < count:
                    await asyncio.sleep(0.01)
        return self.messages

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pubsub.aclose()
        await self.client.aclose()


@pytest.fixture
def subscriber(redis_url: str, channel_prefix: str) -> RedisSubscriber:
    return RedisSubscriber(redis_url, f"{channel_prefix}*")
