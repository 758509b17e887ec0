"""Redis stopped for 30 seconds while the writer keeps going: the daemon's memory stays flat (it
holds no backlog in memory) and everything arrives, in per-row order, once Redis is back."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.e2e.support import wait_until
from tests.faults.scenario import Harness, count_events, rss_kb, wait_received

# Each scenario bounds itself (asyncio.timeout up to 150 s, then the drain's own wait); the
# per-test timeout is only the backstop beyond that, and the 120 s default is less.
pytestmark = pytest.mark.timeout(300)

TOTAL = 20_000
BATCH = 500
OUTAGE = 30.0
RSS_SLACK_KB = 25 * 1024


@pytest.mark.slow
@pytest.mark.parametrize("source", ["trigger", "wal"])
async def test_redis_down_30s_memory_stays_flat(source: str, harness: Harness) -> None:
    config = harness.config(batch_size=BATCH, source=source)
    await harness.install(config)
    daemon = await harness.daemon(config)
    # About 2 s of stream before the outage, the rest (most of it) written while Redis is down.
    writer = harness.write(total=TOTAL, rate=TOTAL / (OUTAGE + 2), seed=3, hot_rows=300)
    async with asyncio.timeout(150):
        await wait_received(harness.reader, 1_000, 30, "the stream to flow")
        before = rss_kb(daemon.pid)
        committed_before = writer.committed
        await asyncio.to_thread(harness.redis.stop)
        during = before
        deadline = time.monotonic() + OUTAGE
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            assert daemon.running, f"daemon exited while Redis was down:\n{daemon.stderr()}"
            during = max(during, rss_kb(daemon.pid))
        written_during = writer.committed - committed_before
        back_ms = int(time.time() * 1000)
        await asyncio.to_thread(harness.redis.start)
        await wait_until(lambda: harness.reader.first_added_after(back_ms) is not None, 60,
                         "the first message after Redis is back", interval=0.05)
        first_after = harness.reader.first_added_after(back_ms)
        assert first_after is not None
        figures = harness.report.figures
        figures.update(rss_before_mb=f"{before / 1024:.1f}",
                       rss_during_max_mb=f"{during / 1024:.1f}",
                       written_while_down=str(written_during),
                       first_after_restart_s=f"{(first_after - back_ms) / 1000:.1f}")
        await writer.wait(30)
        # The end of the outage is reported too, once.
        await daemon.wait_for_log("publisher_recovered", timeout=30)

        def rss_after() -> None:
            figures["rss_after_mb"] = f"{rss_kb(daemon.pid) / 1024:.1f}"

        await harness.finish([daemon], faults=1, batch_size=BATCH, timeout=90,
                             on_arrived=rss_after)

    assert written_during >= TOTAL // 2, f"only {written_during} changes made during the outage"
    assert first_after - back_ms <= 20_000, "took more than the longest retry backoff (10 s)"
    assert during <= before + RSS_SLACK_KB, (
        f"RSS grew from {before} kB to {during} kB while Redis was down")
    # The outage is reported, not logged in a loop, and the daemon never lost its database.
    unavailable = count_events(daemon, "publisher_unavailable")
    assert 1 <= unavailable <= 3, daemon.stderr()[-3000:]
    assert count_events(daemon, "publisher_recovered") == 1, daemon.stderr()[-3000:]
    assert count_events(daemon, "database_connection_lost") == 0, daemon.stderr()[-3000:]
    # Whatever the records are called: a 30 s outage is a handful of lines, not a loop.
    warnings = [r["event"] for r in daemon.log_records(strict=False)
                if r.get("level") in ("warning", "error")]
    assert len(warnings) <= 5, warnings
    harness.report.figures.update(publisher_unavailable_logs=str(unavailable),
                                  warning_logs=str(len(warnings)))
