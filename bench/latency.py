"""P4 - latency from commit to a Redis subscriber, at a steady rate of changes: the commit
time is ``clock_timestamp()`` taken inside the writer's transaction (stored in the row), the
receive time ``time.time()`` in the subscriber process, on the same host clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson
import redis.asyncio as aioredis

from bench.common import (
    INSERT_ONE,
    PAYLOAD,
    at_most,
    fmt_num,
    fmt_ratio,
    log,
    percentile,
    ratio,
)
from bench.database import Bench, daemon_config
from bench.machine import wait_until_quiet
from bench.processes import Daemon, Subscriber
from bench.report import LatencyBar, Report, Row

WARMUP_CHANGES = 5  # first changes of each phase, not counted
PER_CONNECTION = 1_000  # changes/s one writer connection is asked for, at most
MAX_CONNECTIONS = 12
IDLE_P50_TARGET_MS = 50.0
# rate → (p50, p99) targets in ms
TARGETS: dict[int, tuple[float, float]] = {100: (2.0, 4.0), 1_000: (3.0, 10.0)}
RECEIVE_WAIT = 15.0  # seconds to wait for the last changes after the writers finished

AfterCommit = Callable[[str, dt.datetime], Awaitable[None]]


@dataclass(frozen=True)
class Phase:
    label: str
    rate: float  # changes/s asked for
    count: int
    steady: int | None  # the nominal rate of a steady phase (targets), None for "idle"


@dataclass
class Latency:
    phase: Phase
    samples_ms: list[float]
    sent: int
    rate: float  # achieved changes/s

    def pct(self, p: float) -> float | None:
        return percentile(self.samples_ms, p) if self.samples_ms else None

    @property
    def max(self) -> float | None:
        return max(self.samples_ms) if self.samples_ms else None

    @property
    def lost(self) -> int:
        return self.sent - len(self.samples_ms)


def phases(report: Report) -> list[Phase]:
    s = report.settings
    out = [Phase(f"idle (one change every {s.idle_interval * 1000:.0f} ms)",
                 1 / s.idle_interval, s.idle_changes, None)]
    for rate in s.latency_rates:
        count = max(WARMUP_CHANGES, min(int(rate * s.latency_seconds), s.latency_max_changes))
        out.append(Phase(f"{rate:,} changes/s", rate, count, rate))
    return out


def latencies_ms(records: list[tuple[float, bytes]], prefix: str) -> list[float]:
    """Receive time minus the row's ``updated_at`` (the writer's clock_timestamp()), for the
    messages whose row name starts with ``prefix-``."""
    out = []
    for received_at, data in records:
        row = orjson.loads(data).get("new")
        if not isinstance(row, dict) or not str(row.get("name", "")).startswith(prefix + "-"):
            continue
        written = dt.datetime.fromisoformat(row["updated_at"]).timestamp()
        out.append((received_at - written) * 1000)
    return out


class Writers:
    """Up to MAX_CONNECTIONS asyncpg connections, each writing single-row autocommit INSERTs
    on its own schedule, so that together they make ``rate`` changes/s."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conns: list[asyncpg.Connection] = []

    async def open(self, count: int) -> None:
        while len(self.conns) < count:
            self.conns.append(await asyncpg.connect(self.url))

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()
        self.conns.clear()

    async def write(self, prefix: str, count: int, rate: float,
                    after_commit: AfterCommit | None = None) -> float:
        """``count`` changes at ``rate``/s; returns the rate achieved."""
        k = max(1, min(MAX_CONNECTIONS, math.ceil(rate / PER_CONNECTION), count))
        await self.open(k)
        started = time.perf_counter()

        async def one_connection(j: int) -> None:
            conn = self.conns[j]
            for i in range(j, count, k):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                name = f"{prefix}-{i}"
                updated_at = await conn.fetchval(INSERT_ONE, name, PAYLOAD)
                if after_commit is not None:
                    await after_commit(name, updated_at)

        await asyncio.gather(*(one_connection(j) for j in range(k)))
        elapsed = time.perf_counter() - started
        return count / elapsed if elapsed > 0 else 0.0


async def measure(phase: Phase, tag: str, writers: Writers, sub: Subscriber, workdir: Path,
                  after_commit: AfterCommit | None = None) -> Latency:
    """Write the phase's changes (after a short unmeasured warm-up) and collect latencies."""
    prefix = f"{tag}-{phase.count}-{int(phase.rate)}"
    await sub.reset()
    await writers.write(f"warmup-{prefix}", WARMUP_CHANGES, min(phase.rate, 100), after_commit)
    await sub.wait(lambda: sub.count >= WARMUP_CHANGES, 10)
    await sub.reset()
    rate = await writers.write(prefix, phase.count, phase.rate, after_commit)
    await sub.wait(lambda: sub.count >= phase.count, RECEIVE_WAIT)
    records = await sub.dump(workdir / "latency-dump.txt")
    result = Latency(phase, latencies_ms(records, prefix), phase.count, rate)
    log(f"P4 {tag} {phase.label}: {len(result.samples_ms)}/{phase.count} received at "
        f"{rate:,.0f}/s, p50 {fmt_num(result.pct(50), 2)} ms, p99 {fmt_num(result.pct(99), 2)} "
        f"ms")
    return result


async def run_p4(bench: Bench, report: Report, workdir: Path) -> None:
    channel = bench.channel
    publisher = aioredis.Redis.from_url(bench.redis_url)

    async def publish_after_commit(name: str, updated_at: dt.datetime) -> None:
        # The same shape as the connector's event, as far as the subscriber reads it.
        await publisher.publish(channel, orjson.dumps(
            {"new": {"name": name, "updated_at": updated_at.isoformat()}}))

    writers = Writers(bench.url)
    sub = await Subscriber(bench.redis_url, channel, record=True).start()
    ours: list[Latency] = []
    refs: list[Latency] = []
    try:
        await bench.set_capture(False)
        await bench.reset()
        for phase in phases(report):
            await wait_until_quiet(report, f"the P4 reference at {phase.label}")
            refs.append(await measure(phase, "reference", writers, sub, workdir,
                                      publish_after_commit))
        await bench.set_capture(True)
        await bench.reset()
        log("P4: starting the daemon")
        daemon = await Daemon(workdir, "p4", daemon_config(
            bench.url, bench.redis_url, channel)).start()
        try:
            await asyncio.sleep(report.settings.settle_seconds)
            for phase in phases(report):
                await wait_until_quiet(report, f"P4 at {phase.label}")
                ours.append(await measure(phase, "pgconnector", writers, sub, workdir))
        finally:
            await daemon.stop()
    finally:
        await sub.stop()
        await writers.close()
        await publisher.aclose()
    for result, ref in zip(ours, refs, strict=True):
        add_rows(report, result, ref)


def add_rows(report: Report, result: Latency, ref: Latency) -> None:
    phase = result.phase
    what = phase.label
    if phase.steady is not None and result.rate < 0.9 * phase.rate:
        what += f" (achieved {result.rate:,.0f}/s)"
    targets = TARGETS.get(phase.steady or 0)
    for name, p in (("p50", 50.0), ("p95", 95.0), ("p99", 99.0)):
        value, ref_value = result.pct(p), ref.pct(p)
        target = "—"
        if phase.steady is None and name == "p50":
            target = at_most(value, IDLE_P50_TARGET_MS, f"well under {IDLE_P50_TARGET_MS:.0f} ms")
        elif targets is not None and name in ("p50", "p99"):
            limit = targets[0] if name == "p50" else targets[1]
            target = at_most(value, limit, f"≤ {limit:g} ms")
        report.add(Row(f"P4 latency commit → subscriber, {what}, {name} (ms)",
                       fmt_num(value, 2), fmt_num(ref_value, 2),
                       fmt_ratio(ratio(value, ref_value)), target))
    report.chart.latency.append(LatencyBar(
        phase.label.split(" (")[0],
        {n: v for n, p in (("p50", 50), ("p95", 95), ("p99", 99))
         if (v := result.pct(p)) is not None},
        {n: v for n, p in (("p50", 50), ("p95", 95), ("p99", 99))
         if (v := ref.pct(p)) is not None}))
    report.details.append(
        f"P4 {phase.label}: {len(result.samples_ms)}/{result.sent} changes received, writers "
        f"achieved {result.rate:,.0f}/s, max {fmt_num(result.max, 1)} ms; reference "
        f"{len(ref.samples_ms)}/{ref.sent} at {ref.rate:,.0f}/s, max {fmt_num(ref.max, 1)} ms")
    if result.lost:
        report.notes.append(f"P4 {phase.label}: {result.lost} change(s) not received within "
                               f"{RECEIVE_WAIT:g} s")
