"""Two daemons with the same config: the active one dies, the standby takes over."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest

from bench.cluster import PostgresCluster
from tests.faults.proxy import TcpProxy
from tests.faults.scenario import Harness, count_events, expect, log_tail, wait_received

# Each scenario bounds itself (asyncio.timeout up to 150 s, then the drain's own wait); the
# per-test timeout is only the backstop beyond that, and the 120 s default is less.
pytestmark = pytest.mark.timeout(300)

TOTAL = 30_000
BATCH = 500
STANDBY_RETRY = 2.0  # the documented default
MAX_TAKEOVER = 10.0
# A holder whose network vanished is noticed by nobody's TCP stack for minutes or hours; the
# standby must end its session by itself: README says after takeover_after (8 s by default),
# checked every standby_retry; plus slack for a loaded machine.
MAX_HALF_OPEN_TAKEOVER = 8.0 + STANDBY_RETRY + 5.0


def logged_at(record: dict[str, object]) -> float:
    """A log record's timestamp (ISO 8601, UTC), as epoch seconds."""
    return datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00")).timestamp()


async def test_standby_takes_over_when_the_active_is_killed(harness: Harness) -> None:
    config = harness.config(batch_size=BATCH, standby_retry=STANDBY_RETRY)
    await harness.install(config)
    active = await harness.daemon(config)
    standby = await harness.daemon(config, active=False)
    await standby.wait_for_log("consumer_standby", timeout=30)
    harness.write(total=TOTAL, rate=5_000, seed=6, hot_rows=500)
    async with asyncio.timeout(120):
        await wait_received(harness.reader, TOTAL // 4, 30, "a quarter of the stream")
        at_kill = harness.reader.count
        killed_at = time.time()
        await active.kill()
        record = await standby.wait_for_log("consumer_active", timeout=MAX_TAKEOVER + 20)
        takeover = logged_at(record) - killed_at
        harness.report.figures.update(takeover_s=f"{takeover:.2f}", received_at_kill=str(at_kill))
        analysis = await harness.finish([active, standby], faults=1, batch_size=BATCH,
                                        timeout=60)

    assert at_kill < analysis.changes
    assert 0 <= takeover <= MAX_TAKEOVER, f"took over after {takeover:.1f}s"
    # Announced once each, no flapping.
    assert count_events(standby, "consumer_standby") == 1, log_tail(standby)
    assert count_events(standby, "consumer_active") == 1, log_tail(standby)
    assert count_events(standby, "database_connection_lost") == 0, log_tail(standby)


@pytest.mark.parametrize("source", ["trigger", "wal"])
async def test_standby_takes_over_from_a_half_open_active(
        source: str, harness: Harness, proxy: TcpProxy, pg_cluster: PostgresCluster) -> None:
    dbname = harness.url.rsplit("/", 1)[1]
    # The active daemon reaches PostgreSQL through the proxy, the standby directly.
    via_proxy = harness.config(batch_size=BATCH, standby_retry=STANDBY_RETRY,
                               dsn=pg_cluster.url(dbname, port=proxy.port), name="active.yaml",
                               source=source)
    direct = harness.config(batch_size=BATCH, standby_retry=STANDBY_RETRY, name="standby.yaml",
                            source=source)
    await harness.install(direct)
    active = await harness.daemon(via_proxy)
    standby = await harness.daemon(direct, active=False)
    await standby.wait_for_log("consumer_standby", timeout=30)
    harness.write(total=TOTAL, rate=5_000, seed=7, hot_rows=500)
    async with asyncio.timeout(150):
        await wait_received(harness.reader, TOTAL // 4, 30, "a quarter of the stream")
        at_cut = harness.reader.count
        cut_at = time.time()
        dead = proxy.blackhole()  # for good: the active's host is gone
        await expect(lambda: "consumer_active" in standby.events(strict=False),
                     MAX_HALF_OPEN_TAKEOVER, "the standby to take over from the half-open active",
                     standby, harness.url)
        record = next(r for r in standby.log_records(strict=False)
                      if r.get("event") == "consumer_active")
        takeover = logged_at(record) - cut_at
        harness.report.figures.update(takeover_s=f"{takeover:.2f}", received_at_cut=str(at_cut))
        await active.kill()  # it cannot stop cleanly through a dead network
        analysis = await harness.finish([standby], faults=1, batch_size=BATCH, timeout=60)

    assert dead >= 1, "the active daemon had no connection through the proxy"
    assert at_cut < analysis.changes
    assert takeover <= MAX_HALF_OPEN_TAKEOVER, f"took over after {takeover:.1f}s"
    assert count_events(standby, "consumer_standby") == 1, log_tail(standby)
