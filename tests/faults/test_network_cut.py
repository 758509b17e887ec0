"""The network between the daemon and PostgreSQL cut through a proxy, mid-stream: reset (both
sides see the connection close) and half-open (nothing is closed, nothing gets through)."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.cluster import PostgresCluster
from tests.faults.proxy import TcpProxy
from tests.faults.scenario import (
    Harness,
    count_events,
    expect,
    log_tail,
    sleep_until,
    wait_received,
)

# Each scenario bounds itself (asyncio.timeout up to 150 s, then the drain's own wait); the
# per-test timeout is only the backstop beyond that, and the 120 s default is less.
pytestmark = pytest.mark.timeout(300)

TOTAL = 30_000
BATCH = 500
BLACKHOLE = 9.0
# liveness_interval + liveness_timeout (the defaults, 1 + 4 s), plus slack for a loaded machine.
NOTICE = 7.0
# After a half-open cut is repaired, the daemon must reconnect and take the consumer lock back
# from its own dead session within this (a reconnect attempted during the cut hangs for
# connect_timeout, 10 s, first).
RECOVERY = 30.0


async def test_connection_reset_mid_stream(harness: Harness, proxy: TcpProxy,
                                           pg_cluster: PostgresCluster) -> None:
    config = harness.config(batch_size=BATCH, dsn=pg_cluster.url(
        harness.url.rsplit("/", 1)[1], port=proxy.port))
    await harness.install(config)
    daemon = await harness.daemon(config)
    harness.write(total=TOTAL, rate=5_000, seed=4, hot_rows=500)
    async with asyncio.timeout(120):
        await wait_received(harness.reader, TOTAL // 4, 30, "a quarter of the stream")
        at_cut = harness.reader.count
        closed = proxy.reset()
        harness.report.figures.update(received_at_cut=str(at_cut), connections_reset=str(closed))
        await daemon.wait_for_log("database_reconnected", timeout=30)
        analysis = await harness.finish([daemon], faults=1, batch_size=BATCH, timeout=60)

    lost = count_events(daemon, "database_connection_lost")
    harness.report.figures["connection_lost_logs"] = str(lost)
    assert closed >= 1, "the daemon had no connection through the proxy"
    assert at_cut < analysis.changes
    assert lost == 1, log_tail(daemon, 40)
    assert count_events(daemon, "database_unavailable") <= 2, log_tail(daemon, 40)
    assert count_events(daemon, "consumer_active") == 2, log_tail(daemon, 40)


async def test_half_open_cut_then_restore(harness: Harness, proxy: TcpProxy,
                                          pg_cluster: PostgresCluster) -> None:
    config = harness.config(batch_size=BATCH, dsn=pg_cluster.url(
        harness.url.rsplit("/", 1)[1], port=proxy.port))
    await harness.install(config)
    daemon = await harness.daemon(config)
    harness.write(total=TOTAL, rate=3_000, seed=5, hot_rows=500)
    async with asyncio.timeout(150):
        await wait_received(harness.reader, TOTAL // 4, 30, "a quarter of the stream")
        at_cut = harness.reader.count
        dead = proxy.blackhole()
        cut = time.monotonic()
        harness.report.figures.update(received_at_cut=str(at_cut), blackholed=str(dead))
        # README: a half-open connection is given up within liveness_interval +
        # liveness_timeout (1 + 4 s by default); publishing stops then.
        await expect(lambda: count_events(daemon, "database_connection_lost") >= 1, NOTICE,
                     "the daemon to notice the half-open cut", daemon, harness.url)
        harness.report.figures["noticed_s"] = f"{time.monotonic() - cut:.1f}"
        await sleep_until(cut + BLACKHOLE)
        during = harness.reader.count - at_cut
        harness.report.figures["received_while_cut"] = str(during)
        proxy.restore()
        restored = time.monotonic()
        # Streaming again: reconnected, and took the consumer lock back from its own dead
        # session (which the server still thinks is alive, holding the lock).
        await expect(lambda: count_events(daemon, "consumer_active") >= 2, RECOVERY,
                     "the daemon to be active again after the repair", daemon, harness.url)
        harness.report.figures["active_again_s"] = f"{time.monotonic() - restored:.1f}"
        analysis = await harness.finish([daemon], faults=1, batch_size=BATCH, timeout=60)

    lost = count_events(daemon, "database_connection_lost")
    harness.report.figures["connection_lost_logs"] = str(lost)
    assert dead >= 1, "the daemon had no connection through the proxy"
    assert during <= BATCH, "messages kept arriving through a blackholed connection"
    assert at_cut < analysis.changes
    # Noticed once; new connections hang until connect_timeout while cut, so a few failed
    # reconnects are expected, not one per poll.
    assert lost == 1, log_tail(daemon, 40)
    assert count_events(daemon, "database_unavailable") <= 3, log_tail(daemon, 40)
