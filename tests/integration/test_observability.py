"""The health server of a running Connector: readiness follows the pipeline's state, and the
metrics count what really flowed (real PostgreSQL, real Redis)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from connector import Connector
from tests.conftest import RedisSubscriber
from tests.e2e.support import wait_until
from tests.integration.helpers import free_port, redis_server


def config(dsn: str, redis_url: str, prefix: str) -> dict[str, Any]:
    return {
        "postgres": {"dsn": dsn},
        "capture": {"poll_interval": 0.1},
        "server": {"port": 0},
        "publishers": {"cache": {"type": "redis", "url": redis_url, "timeout": 1,
                                 "retry": {"initial_backoff": 0.05, "max_backoff": 0.2}}},
        "routes": [{"table": "items", "publisher": "cache", "channel": prefix + ":items"}],
    }


async def get(c: Connector, path: str) -> tuple[int, str]:
    assert c.health is not None
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{c.health.port}{path}") as r:
        return r.status, await r.text()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def samples(c: Connector) -> Samples:
    status, text = await get(c, "/metrics")
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(got: Samples, name: str, **labels: str) -> float:
    return got.get((name, frozenset(labels.items())), 0.0)


async def samples_when(c: Connector, reached: Callable[[Samples], bool], what: str) -> Samples:
    """/metrics, read again until ``reached`` holds of it. The metrics follow the pipeline
    rather than lead it: a batch's events are counted once its claim commits, after its
    messages went out; the backlog gauges when a housekeeping round next reads the backlog."""
    got: Samples = {}

    async def check() -> bool:
        nonlocal got
        got = await samples(c)
        return reached(got)

    await wait_until(check, 15, what)
    return got


async def test_ready_and_counted_while_streaming(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str) -> None:
    await pg.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
    async with RedisSubscriber(redis_url, channel_prefix + "*") as sub, \
            Connector(config(database, redis_url, channel_prefix)) as c:
        status, body = await get(c, "/readyz")
        assert status == 200 and '"state": "active"' in body.replace('":"', '": "')
        assert (await get(c, "/healthz"))[0] == 200
        await pg.execute("INSERT INTO items SELECT g, 'n' FROM generate_series(1, 30) g")
        await pg.execute("UPDATE items SET name = 'm' WHERE id <= 10")
        assert len(await sub.wait_for(40)) == 40
        got = await samples_when(c, lambda m: value(
            m, "pgconnector_events_captured_total", table="public.items", op="update") >= 10,
            "the last batch counted")
        assert value(got, "pgconnector_events_captured_total",
                     table="public.items", op="insert") == 30
        assert value(got, "pgconnector_events_captured_total",
                     table="public.items", op="update") == 10
        assert value(got, "pgconnector_messages_published_total",
                     publisher="cache", route="routes[0]") == 40
        assert value(got, "pgconnector_active") == 1
        assert value(got, "pgconnector_publisher_up", publisher="cache") == 1
        assert value(got, "pgconnector_publish_duration_seconds_count", publisher="cache") >= 1


async def test_not_ready_while_the_publisher_is_down(
        database: str, pg: asyncpg.Connection, channel_prefix: str) -> None:
    await pg.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    async with Connector(config(database, url, channel_prefix)) as c:
        await pg.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b')")
        await wait_until(lambda: "cache" in c.parked, 10, "the publisher parked")
        status, body = await get(c, "/readyz")
        assert status == 503 and "cache" in body
        # A housekeeping round refreshes the gauges; the first may run before the parking
        # commits, so wait for what they read, not for a round to have run.
        got = await samples_when(c, lambda m: value(
            m, "pgconnector_parked", publisher="cache") >= 2, "the gauges to count the parked")
        assert value(got, "pgconnector_publisher_up", publisher="cache") == 0
        assert value(got, "pgconnector_parked", publisher="cache") == 2
        assert value(got, "pgconnector_publish_failures_total",
                     publisher="cache", route="routes[0]") >= 2
        with redis_server(port):
            await wait_until(lambda: "cache" not in c.parked, 20, "the publisher back")
            assert (await get(c, "/readyz"))[0] == 200
            got = await samples(c)
            assert value(got, "pgconnector_messages_published_total",
                         publisher="cache", route="routes[0]") == 2
