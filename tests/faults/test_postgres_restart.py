"""PostgreSQL restarted (``pg_ctl restart -m fast``) mid-stream: the daemon reconnects, takes the
consumer lock again and delivers everything, once per change but for the batch in flight."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.cluster import PostgresCluster
from tests.faults.scenario import Harness, count_events, wait_received

# Each scenario bounds itself (asyncio.timeout up to 150 s, then the drain's own wait); the
# per-test timeout is only the backstop beyond that, and the 120 s default is less.
pytestmark = pytest.mark.timeout(300)

TOTAL = 30_000
BATCH = 500


@pytest.mark.parametrize("source", ["trigger", "wal"])
async def test_postgres_restart_mid_stream(source: str, harness: Harness,
                                           pg_cluster: PostgresCluster) -> None:
    config = harness.config(batch_size=BATCH, source=source)
    await harness.install(config)
    daemon = await harness.daemon(config)
    writer = harness.write(total=TOTAL, rate=5_000, seed=2, hot_rows=500)
    async with asyncio.timeout(120):
        await wait_received(harness.reader, TOTAL // 4, 30, "a quarter of the stream")
        at_restart = harness.reader.count
        started = time.monotonic()
        await asyncio.to_thread(pg_cluster.restart)
        restart_s = time.monotonic() - started
        committed_at_restart = writer.committed
        harness.report.figures.update(received_at_restart=str(at_restart),
                                      restart_s=f"{restart_s:.1f}")
        await daemon.wait_for_log("database_reconnected", timeout=30)
        analysis = await harness.finish([daemon], faults=1, batch_size=BATCH, timeout=60)

    harness.report.figures["writer_reconnects"] = str(writer.reconnects)
    assert at_restart < analysis.changes, "everything had arrived before the restart"
    assert writer.reconnects >= 1 and writer.committed > committed_at_restart, (
        "the writer did not write across the restart", writer.errors[:3])
    assert daemon.proc is not None and daemon.proc.returncode == 0  # the same process
    # Said once, not in a loop: one lost connection, a few refused reconnects at most.
    lost = count_events(daemon, "database_connection_lost")
    unavailable = count_events(daemon, "database_unavailable")
    assert lost == 1, daemon.stderr()[-3000:]
    assert unavailable <= 5, daemon.stderr()[-3000:]
    assert count_events(daemon, "database_reconnected") == 1
    assert count_events(daemon, "consumer_active") == 2
    harness.report.figures.update(connection_lost=str(lost), unavailable=str(unavailable))
