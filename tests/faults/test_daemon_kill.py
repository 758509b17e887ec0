"""The daemon killed with SIGKILL at random moments while changes stream: nothing is lost, order
per row holds, and a re-delivery is at most the batch that was in flight."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.faults.scenario import Harness, count_events, wait_received

# Each scenario bounds itself (asyncio.timeout up to 150 s, then the drain's own wait); the
# per-test timeout is only the backstop beyond that, and the 120 s default is less.
pytestmark = pytest.mark.timeout(300)

TOTAL = 100_000
KILLS = 5
BATCH = 500


@pytest.mark.slow
@pytest.mark.parametrize("source", ["trigger", "wal"])
async def test_sigkill_five_times_while_100k_changes_stream(source: str, harness: Harness) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    harness.report.figures["seed"] = str(seed)
    config = harness.config(batch_size=BATCH, source=source)
    await harness.install(config)
    daemon = await harness.daemon(config)
    # The wal source drains about 20k changes/s in one process (bench/RESULTS.md), less while
    # the writer shares the two cores: a slower writer keeps the kills inside the stream.
    writer = harness.write(total=TOTAL, rate=12_000 if source == "trigger" else 5_000,
                           seed=seed, inserts=25, updates=25, hot_rows=2_000)
    # Kill when these many messages have arrived (spread over the stream), each a random
    # few milliseconds later so the kill lands anywhere in a claim/publish/commit cycle.
    marks = sorted(rng.sample(range(TOTAL // 20, TOTAL * 4 // 5, BATCH // 5), KILLS))
    at_kill: list[int] = []
    writing_at_kill = 0
    daemons = [daemon]
    restart_s: list[float] = []
    async with asyncio.timeout(150):
        for mark in marks:
            await wait_received(harness.reader, max(mark, harness.reader.count + BATCH), 60,
                                "messages before the next kill")
            await asyncio.sleep(rng.uniform(0, 0.05))
            await daemon.kill()
            at_kill.append(len(harness.reader.keys()))  # distinct changes received
            writing_at_kill += not writer.done
            assert "stopped" not in daemon.events(strict=False)  # killed, not stopped
            started = time.monotonic()
            daemon = await harness.daemon(config)
            restart_s.append(time.monotonic() - started)
            daemons.append(daemon)
        harness.report.figures.update(
            kills=str(KILLS), received_at_kills="/".join(map(str, at_kill)),
            writing_at_kills=str(writing_at_kill), restart_max_s=f"{max(restart_s):.1f}")
        analysis = await harness.finish(daemons, faults=KILLS, batch_size=BATCH, timeout=90)

    assert analysis.changes == TOTAL, analysis.summary()  # the writer is never cut here
    # Each kill cut the stream short: more was still to come.
    assert all(n < analysis.changes for n in at_kill), at_kill
    assert writing_at_kill >= 1, "every kill came after the writer finished"
    for d in daemons:
        # One start, one activation, no reconnect loop.
        assert count_events(d, "consumer_active") == 1, d.stderr()[-2000:]
        assert count_events(d, "database_connection_lost") == 0, d.stderr()[-2000:]
