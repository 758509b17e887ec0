"""P5 - memory: the daemon's RSS (VmRSS of /proc/<pid>/status, every 0.5 s) over P3's drain,
and through a publisher outage: a throwaway redis-server stopped for ``outage_seconds`` while
writers keep producing, then started again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from bench.common import TABLE, fmt_num, is_flat, log
from bench.database import Bench, daemon_config
from bench.drain import Drain, DrainResults
from bench.latency import Writers
from bench.processes import Daemon, ThrowawayRedis
from bench.report import Report, Row, Series

TARGET_RSS_MB = 150.0
FLAT_SLACK_MB = 10.0  # "flat": never more than this above where it started
RECOVERY_WAIT = 120.0  # seconds for the backlog to empty once Redis is back


def summary(samples: list[tuple[float, int]]) -> tuple[float, float, float]:
    """(first, highest, last) of RSS samples in kB, as MB."""
    values = [kb / 1024 for _, kb in samples]
    return values[0], max(values), values[-1]


def target_cell(start: float, peak: float) -> str:
    met = peak <= TARGET_RSS_MB and is_flat(start * 1024, peak * 1024, FLAT_SLACK_MB * 1024)
    return f"≤ {TARGET_RSS_MB:.0f} MB and flat ({'met' if met else 'missed'})"


def mb_triple(start: float, peak: float, end: float) -> str:
    return f"{start:.0f} / {peak:.0f} / {end:.0f}"


def add_drain_rows(report: Report, drains: DrainResults) -> None:
    runs: list[Drain] = [r for r in (drains.pubsub, drains.stream) if r is not None and r.rss]
    if not runs:
        report.skipped.append("P5 RSS over the drain: P3 did not run")
    for run in runs:
        start, peak, end = summary(run.rss)
        how = "pub/sub" if run.mode == "pubsub" else "stream"
        report.add(Row(f"P5 daemon RSS over the {run.events:,}-change drain to Redis {how} "
                       "(MB: start / max / end)", mb_triple(start, peak, end), "—", "—",
                       target_cell(start, peak)))
        report.chart.rss.append(Series(f"drain to Redis {how}", [
            (t - run.active_at, kb / 1024) for t, kb in run.rss]))


async def run_outage(bench: Bench, report: Report, workdir: Path) -> None:
    s = report.settings
    warm, after = (1.0, 1.0) if s.smoke else (5.0, 5.0)
    redis = ThrowawayRedis(workdir)
    await redis.start()
    await bench.set_capture(True)
    await bench.reset()
    # Smoke: retry sooner, so the run ends in seconds (the full run keeps the defaults).
    retry = {"initial_backoff": 0.2, "max_backoff": 1} if s.smoke else None
    daemon = await Daemon(workdir, "p5-outage", daemon_config(
        bench.url, redis.url, bench.channel, retry=retry)).start()
    writers = Writers(bench.url)
    total = int(s.outage_rate * (warm + s.outage_seconds + after))
    rss: list[tuple[float, int]] = []
    began = time.time()
    down_at = up_at = recovered_at = None
    left = 0
    written_before = 0
    sampling = True

    async def sample() -> None:
        while sampling:
            kb = daemon.rss_kb()
            if kb is not None:
                rss.append((time.time(), kb))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    try:
        log(f"P5: writers at {s.outage_rate}/s; Redis goes down in {warm:g} s for "
            f"{s.outage_seconds:g} s")
        writing = asyncio.create_task(writers.write("outage", total, s.outage_rate))
        await asyncio.sleep(warm)
        written_before = int(await bench.db.fetchval(f"SELECT count(*) FROM {TABLE}"))
        await redis.stop()
        down_at = time.time()
        log("P5: Redis stopped")
        while time.time() - down_at < s.outage_seconds:
            await asyncio.sleep(min(5.0, s.outage_seconds - (time.time() - down_at)))
            if not daemon.running:
                raise RuntimeError(f"the daemon exited while Redis was down:\n"
                                   f"{daemon.log_tail()}")
            log(f"P5: Redis down {time.time() - down_at:.0f} s, backlog "
                f"{await bench.backlog():,}, RSS {(daemon.rss_kb() or 0) / 1024:.0f} MB")
        written_during = int(await bench.db.fetchval(
            f"SELECT count(*) FROM {TABLE}")) - written_before
        await redis.start()
        up_at = time.time()
        log("P5: Redis started again")
        await writing
        deadline = time.monotonic() + RECOVERY_WAIT
        while time.monotonic() < deadline:
            if await bench.backlog() == 0:
                recovered_at = time.time()
                break
            await asyncio.sleep(0.2)
        left = await bench.backlog()
        await asyncio.sleep(1.0)  # one more RSS sample or two after the catch-up
    finally:
        sampling = False
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        unavailable = daemon.count_events("publisher_unavailable")
        recovered = daemon.count_events("publisher_recovered")
        await daemon.stop()
        await writers.close()
        await redis.stop()
    assert down_at is not None and up_at is not None
    before = [x for x in rss if x[0] <= down_at] or rss[:1]
    during = [x for x in rss if down_at <= x[0] <= up_at] or before
    start = before[-1][1] / 1024
    peak = max(kb for _, kb in during) / 1024
    end = rss[-1][1] / 1024
    report.add(Row(f"P5 daemon RSS through a {s.outage_seconds:g} s Redis outage, writers at "
                   f"{s.outage_rate:,} changes/s (MB: at outage start / max during / end)",
                   mb_triple(start, peak, end), "—", "—", target_cell(start, peak)))
    report.chart.rss.append(Series("Redis outage", [(t - began, kb / 1024) for t, kb in rss]))
    report.chart.outage = (down_at - began, up_at - began)
    back = ("not within the wait" if recovered_at is None
            else f"{recovered_at - up_at:.1f} s after Redis came back")
    report.details.append(
        f"P5 outage: {written_during:,} changes written while Redis was down; backlog (outbox + "
        f"parked) empty {back}; the daemon logged publisher_unavailable {unavailable} time(s), "
        f"publisher_recovered {recovered}; highest RSS over the whole phase "
        f"{fmt_num(max(kb for _, kb in rss) / 1024, 1)} MB")
    if recovered_at is None:
        report.notes.append(
            f"P5: the daemon did not deliver the backlog within {RECOVERY_WAIT:g} s of Redis "
            f"coming back ({left:,} changes still in the outbox or parked; "
            f"publisher_recovered logged {recovered} time(s)): see its log, the drain of "
            "parked messages may have stopped")
