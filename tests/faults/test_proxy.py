"""The proxy does what the scenarios rely on: a reset reaches both ends, a blackhole closes
nothing and passes nothing, a restore serves new connections only."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bench.cluster import PostgresCluster
from tests.e2e.support import wait_until
from tests.faults.proxy import TcpProxy

APP = "faults-proxy-check"
SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
CONNECTION_GONE = (ConnectionError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                   OSError)


async def connect(pg_cluster: PostgresCluster, proxy: TcpProxy,
                  timeout: float = 5) -> asyncpg.Connection:
    return await asyncpg.connect(pg_cluster.url("postgres", port=proxy.port), timeout=timeout,
                                 server_settings={"application_name": APP})


async def test_reset_closes_both_sides(pg_cluster: PostgresCluster, proxy: TcpProxy) -> None:
    admin = await asyncpg.connect(pg_cluster.admin_url)
    conn = await connect(pg_cluster, proxy)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await admin.fetchval(SESSIONS, APP) == 1
        assert proxy.reset() == 1
        with pytest.raises(CONNECTION_GONE):
            await asyncio.wait_for(conn.fetchval("SELECT 1"), 5)

        async def server_side_gone() -> bool:
            return bool(await admin.fetchval(SESSIONS, APP) == 0)

        await wait_until(server_side_gone, 5, "the server to end the reset session")
        again = await connect(pg_cluster, proxy)  # new connections forward as before
        assert await again.fetchval("SELECT 1") == 1
        await again.close()
    finally:
        conn.terminate()
        await admin.close()


async def test_blackhole_is_half_open_and_restore_serves_new_connections_only(
        pg_cluster: PostgresCluster, proxy: TcpProxy) -> None:
    admin = await asyncpg.connect(pg_cluster.admin_url)
    conn = await connect(pg_cluster, proxy)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert proxy.blackhole() == 1
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(conn.fetchval("SELECT 1"), 1)
        assert not conn.is_closed()
        # Nothing was closed: the server still has the session.
        assert await admin.fetchval(SESSIONS, APP) == 1
        # New connections are accepted and then hear nothing.
        with pytest.raises(TimeoutError):
            await connect(pg_cluster, proxy, timeout=1)
        proxy.restore()
        fresh = await connect(pg_cluster, proxy)
        assert await fresh.fetchval("SELECT 1") == 1
        await fresh.close()
        # The blackholed connection stays dead, and open.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(conn.fetchval("SELECT 1"), 1)
        assert proxy.open_links() >= 2  # the dead one and the one that never got through
        assert await admin.fetchval(SESSIONS, APP) == 1
    finally:
        conn.terminate()
        await admin.close()
