"""P3 - drain throughput: a backlog of ``drain_events`` captured changes drained to Redis by
one daemon process (pub/sub with a counting subscriber, and stream mode counted with XLEN),
beside a plain redis-py pipeline publishing the same payloads; then the sustained rate while
writers keep producing. The daemon's RSS over the drain is kept for P5."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from bench.common import (
    PAYLOAD_LITERAL,
    SCHEMA,
    TABLE,
    at_least,
    cpu_total,
    fmt_num,
    fmt_ratio,
    log,
    quote_ident,
    rates_per_second,
)
from bench.database import Bench, Pgbench, daemon_config
from bench.machine import wait_until_quiet
from bench.processes import Daemon, Subscriber, reference_publish
from bench.report import Report, Row, Series

TARGET_PUBSUB = 60_000  # events/s drained to Redis pub/sub by one daemon process
NODE_REFERENCE = 3_100  # msgs/s, the Ably Postgres connector (Node), a fixed figure
POLL = 0.1  # seconds between progress probes while draining
SUSTAINED_ROWS_PER_TX = 10
SUSTAINED_CLIENTS = 4


@dataclass
class Drain:
    """One drain of the backlog: when the daemon became active, when the outbox was empty,
    when everything had reached Redis, and what was sampled on the way."""
    mode: str
    events: int
    active_at: float
    empty_at: float | None = None
    delivered_at: float | None = None
    progress: list[tuple[float, float]] = field(default_factory=list)  # (time, delivered)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (time, kB)
    cpu: float | None = None  # daemon CPU seconds used while draining
    backend_cpu: float | None = None  # and its PostgreSQL session's

    @property
    def rate(self) -> float | None:
        if self.delivered_at is None or self.delivered_at <= self.active_at:
            return None
        return self.events / (self.delivered_at - self.active_at)

    @property
    def seconds(self) -> float | None:
        return None if self.delivered_at is None else self.delivered_at - self.active_at


@dataclass(frozen=True)
class Step:
    """One rate of the sustained run."""
    rate: int  # changes/s asked of the writers
    produced: float  # changes/s they wrote (pgbench's own figure)
    delivered: float  # changes/s the subscriber received while they wrote
    backlog: int  # changes not yet delivered when they stopped
    catch_up: float | None  # seconds until those were delivered

    @property
    def kept_up(self) -> bool:
        """At most a second of production (or two batches) behind when the writers stop."""
        return self.backlog <= max(self.produced, 2_000)


@dataclass
class DrainResults:
    pubsub: Drain | None = None
    stream: Drain | None = None


class P3:
    def __init__(self, bench: Bench, report: Report, pgbench: Pgbench | None,
                 workdir: Path) -> None:
        self.bench = bench
        self.report = report
        self.s = report.settings
        self.pgbench = pgbench
        self.workdir = workdir
        self.redis_url = bench.redis_url
        self.redis: aioredis.Redis = aioredis.Redis.from_url(self.redis_url)
        self.channel = f"{bench.channel}:drain"
        self.sample = workdir / "event-sample.json"
        self.results = DrainResults()

    async def run(self) -> DrainResults:
        subscriber = await Subscriber(self.redis_url, self.channel, sample=self.sample).start()
        try:
            await self.pubsub(subscriber)
            await self.stream()
            if self.pgbench is None:
                self.report.skipped.append("P3 sustained rate: pgbench not found")
            else:
                await self.sustained(subscriber, self.pgbench)
        finally:
            await subscriber.stop()
            await self.redis.aclose()
        return self.results

    # ------------------------------------------------------------------ the backlog

    async def backlog(self) -> int:
        """Fill the outbox with ``drain_events`` changes (the capture trigger, statements of
        100,000 rows), then VACUUM ANALYZE and CHECKPOINT; returns the last outbox id."""
        n = self.s.drain_events
        await self.bench.set_capture(True)
        await self.bench.reset()
        started = time.monotonic()
        last_log = [started]

        def progress(done: int) -> None:
            if time.monotonic() - last_log[0] >= 5 or done == n:
                log(f"P3 backlog: {done:,}/{n:,} changes captured")
                last_log[0] = time.monotonic()

        await self.bench.fill(n, captured=True, progress=progress)
        filled = time.monotonic() - started
        await self.bench.db.execute(f"VACUUM ANALYZE {quote_ident(SCHEMA)}.outbox")
        # The application table too: else autovacuum visits its million new rows during the
        # drain (seen in a full run: 23k/s for the first seconds, 35k/s once it was done).
        await self.bench.db.execute(f"VACUUM ANALYZE {TABLE}")
        await self.bench.db.execute("CHECKPOINT")
        self.report.details.append(
            f"P3 backlog: {n:,} changes captured in {filled:.1f} s "
            f"({n / filled:,.0f}/s, statements of 100,000 rows), then VACUUM ANALYZE")
        return await self.bench.outbox_tail()

    async def drain(self, mode: str, channel: str,
                    delivered: Callable[[], Awaitable[int]]) -> Drain:
        """Start the daemon on the filled outbox and follow it until everything arrived."""
        n = self.s.drain_events
        await wait_until_quiet(self.report, f"the P3 {mode} drain")
        config = daemon_config(self.bench.url, self.redis_url, channel, mode=mode)
        daemon = await Daemon(self.workdir, f"p3-{mode}", config).start(timeout=60)
        assert daemon.active_at is not None
        run = Drain(mode, n, daemon.active_at)
        cpu_before = daemon.cpu_seconds()
        backends = await self.bench.daemon_backends()
        backend_before = cpu_total(backends)
        deadline = time.monotonic() + max(120.0, n / 2_000)
        last_rss = last_log = 0.0
        try:
            while True:
                now = time.time()
                count = await delivered()
                run.progress.append((now, count))
                if run.empty_at is None and await self.bench.outbox_head() is None:
                    run.empty_at = now
                if count >= n and run.delivered_at is None:
                    run.delivered_at = now
                if now - last_rss >= 0.5:
                    rss = daemon.rss_kb()
                    if rss is not None:
                        run.rss.append((now, rss))
                    last_rss = now
                if now - last_log >= 5:
                    elapsed = max(1e-9, now - run.active_at)
                    log(f"P3 {mode}: {count:,}/{n:,} delivered, {count / elapsed:,.0f}/s, "
                        f"RSS {(daemon.rss_kb() or 0) / 1024:.0f} MB")
                    last_log = now
                if run.empty_at is not None and run.delivered_at is not None:
                    break
                if not daemon.running:
                    raise RuntimeError(f"the daemon exited while draining:\n{daemon.log_tail()}")
                if time.monotonic() > deadline:
                    log(f"P3 {mode}: gave up waiting ({count:,}/{n:,} delivered)")
                    break
                await asyncio.sleep(POLL)
            cpu_after = daemon.cpu_seconds()
            if cpu_before is not None and cpu_after is not None:
                run.cpu = cpu_after - cpu_before
            if backends:
                run.backend_cpu = cpu_total(backends) - backend_before
            rss = daemon.rss_kb()
            if rss is not None:
                run.rss.append((time.time(), rss))
        finally:
            await daemon.stop()
        return run

    # ------------------------------------------------------------------ pub/sub

    async def pubsub(self, subscriber: Subscriber) -> None:
        n = self.s.drain_events
        await self.backlog()
        await subscriber.reset()
        await subscriber.expect(n)

        async def received() -> int:
            return subscriber.count

        run = await self.drain("pubsub", self.channel, received)
        if subscriber.done_at is not None:
            run.delivered_at = subscriber.done_at  # the subscriber's own clock, not the poll
        self.results.pubsub = run
        if subscriber.closed:
            self.report.notes.append("P3: Redis closed the subscriber's connection (its "
                                        "output buffer limit?)")
        reference = None
        if self.sample.exists():
            await subscriber.reset()
            await subscriber.expect(n)
            await wait_until_quiet(self.report, "the P3 pub/sub reference")
            started, ended = await reference_publish(self.redis_url, self.channel, "pubsub", n,
                                                     self.sample)
            await subscriber.wait(lambda: subscriber.done_at is not None, 60)
            finished = subscriber.done_at or ended
            reference = n / (finished - started)
            log(f"P3 pubsub reference (redis-py pipeline): {reference:,.0f} events/s")
            self.report.chart.throughput.append(Series(
                "reference: redis-py pipeline, PUBLISH", rates_per_second(
                    [(0.0, 0.0)] + [(t - started, c) for t, c in subscriber.samples]), "--"))
        self.report.chart.throughput.insert(0, Series("pgconnector → Redis pub/sub", [
            *rates_per_second([(t - run.active_at, c) for t, c in run.progress])]))
        self.add_row("pubsub", run, reference,
                     at_least(run.rate, TARGET_PUBSUB, f"≥ {TARGET_PUBSUB:,}/s"))

    # ------------------------------------------------------------------ stream

    async def stream(self) -> None:
        n = self.s.drain_events
        key = f"{self.channel}:stream:{uuid.uuid4().hex[:6]}"
        ref_key = key + ":reference"
        await self.backlog()

        async def xlen() -> int:
            return int(await self.redis.xlen(key))

        try:
            run = await self.drain("stream", key, xlen)
            self.results.stream = run
            self.report.chart.throughput.append(Series("pgconnector → Redis stream (XADD)", [
                *rates_per_second([(t - run.active_at, c) for t, c in run.progress])]))
            await self.redis.unlink(key)  # a million entries: free them before the next million
            reference = None
            if self.sample.exists():
                await wait_until_quiet(self.report, "the P3 stream reference")
                started, ended = await reference_publish(self.redis_url, ref_key, "stream", n,
                                                         self.sample)
                if int(await self.redis.xlen(ref_key)) >= n:
                    reference = n / (ended - started)
                    log(f"P3 stream reference (redis-py pipeline): {reference:,.0f} events/s")
                    self.report.chart.throughput.append(Series(
                        "reference: redis-py pipeline, XADD (average)",
                        [(0.0, reference), (ended - started, reference)], "--"))
            self.add_row("stream", run, reference, "reported")
        finally:
            await self.redis.unlink(key, ref_key)

    def add_row(self, mode: str, run: Drain, reference: float | None, target: str) -> None:
        n = self.s.drain_events
        log(f"P3 {mode}: {fmt_num(run.rate)} events/s ({n:,} in {fmt_num(run.seconds, 1)} s)")
        how = "pub/sub, a subscriber counting" if mode == "pubsub" else "stream, XADD (XLEN)"
        self.report.add(Row(f"P3 drain a backlog of {n:,} changes to Redis {how} (events/s)",
                            fmt_num(run.rate), fmt_num(reference),
                            fmt_ratio(None if run.rate is None or not reference
                                      else run.rate / reference), target))
        empty = ("not within the wait" if run.empty_at is None
                 else f"{run.empty_at - run.active_at:.1f} s")
        cpu = ("" if run.cpu is None or not run.seconds
               else f"; daemon CPU {run.cpu / run.seconds:.0%} of a core")
        if run.backend_cpu is not None and run.seconds:
            cpu += f", its PostgreSQL session {run.backend_cpu / run.seconds:.0%}"
        self.report.details.append(
            f"P3 {mode} drain: outbox empty after {empty}, everything in Redis after "
            f"{fmt_num(run.seconds, 1)} s (from the daemon's consumer_active){cpu}; reference "
            f"{fmt_num(reference)} events/s")

    # ------------------------------------------------------------------ sustained

    async def sustained(self, subscriber: Subscriber, pgbench: Pgbench) -> None:
        """Writers (pgbench -R, 10-row INSERT transactions) produce at fixed rates, one step
        after the other, while one daemon drains: the highest rate it keeps up with."""
        s = self.s
        script = pgbench.script("p3-sustained", (
            f"INSERT INTO {TABLE} (name, payload, updated_at) SELECT 'sustained-' || g, "
            f"{PAYLOAD_LITERAL}::jsonb, now() "
            f"FROM generate_series(1, {SUSTAINED_ROWS_PER_TX}) AS g;\n"))
        await self.bench.set_capture(True)
        await self.bench.reset()
        await subscriber.reset()
        await wait_until_quiet(self.report, "the P3 sustained run")
        config = daemon_config(self.bench.url, self.redis_url, self.channel)
        daemon = await Daemon(self.workdir, "p3-sustained", config).start()
        steps: list[Step] = []
        produced: list[tuple[float, float]] = []
        began = time.time()
        try:
            await asyncio.sleep(min(1.0, s.settle_seconds))
            for rate in s.sustained_rates:
                step = await self.step(subscriber, pgbench, script, rate, began, produced)
                steps.append(step)
                if not step.kept_up:
                    break
                if step.produced < 0.9 * rate:
                    self.report.details.append(
                        f"P3 sustained: the writers could not produce more than "
                        f"{step.produced:,.0f} changes/s on this machine (asked for {rate:,})")
                    break
        finally:
            await daemon.stop()
        self.report.chart.throughput.append(Series(
            "sustained: delivered while writers produce (rising steps)",
            rates_per_second([(t - began, c) for t, c in subscriber.samples if t >= began])))
        self.report.chart.throughput.append(Series(
            "sustained: written by pgbench", rates_per_second(produced), ":"))
        kept = [st for st in steps if st.kept_up]
        best = max(kept, key=lambda st: st.delivered) if kept else steps[0]
        if kept:
            what = (f"P3 sustained: highest writer rate kept up with, stepping "
                    f"{', '.join(f'{st.rate:,}' for st in steps)} changes/s (events/s delivered)")
            verdict_text = ("kept up at every step" if len(kept) == len(steps) else
                            f"fell behind at {steps[-1].rate:,}/s: {steps[-1].backlog:,} "
                            "waiting when the writers stopped")
        else:
            what = (f"P3 sustained: delivered while writers produce {best.rate:,} changes/s "
                    "(events/s)")
            verdict_text = f"fell behind: {best.backlog:,} waiting when the writers stopped"
        self.report.add(Row(what, fmt_num(best.delivered),
                            f"{NODE_REFERENCE:,} (Node connector, fixed)",
                            fmt_ratio(best.delivered / NODE_REFERENCE),
                            f"reported ({verdict_text})"))

    async def step(self, subscriber: Subscriber, pgbench: Pgbench, script: Path, rate: int,
                   began: float, produced: list[tuple[float, float]]) -> Step:
        """One rate for ``sustained_seconds``, then until the backlog is delivered."""
        s = self.s
        log(f"P3 sustained: writers at {rate:,} changes/s for {s.sustained_seconds} s")
        first = int(await self.bench.db.fetchval(f"SELECT coalesce(max(id), 0) FROM {TABLE}"))
        started = time.time()
        at_start = subscriber.count
        writers = asyncio.create_task(pgbench.run(
            script, SUSTAINED_CLIENTS, s.sustained_seconds, rate / SUSTAINED_ROWS_PER_TX))
        while not writers.done():
            top = await self.bench.db.fetchval(f"SELECT max(id) FROM {TABLE}")
            produced.append((time.time() - began, float(top or 0)))
            await asyncio.wait({writers}, timeout=0.2)
        result = writers.result()
        ended = time.time()
        delivered = subscriber.count - at_start
        written = int(await self.bench.db.fetchval(f"SELECT max(id) FROM {TABLE}")) - first
        backlog = max(0, written - delivered)
        caught = await subscriber.wait(lambda: subscriber.count - at_start >= written, 120)
        step = Step(rate, result.tps * SUSTAINED_ROWS_PER_TX, delivered / (ended - started),
                    backlog, time.time() - ended if caught else None)
        log(f"P3 sustained {rate:,}/s: produced {step.produced:,.0f}/s, delivered "
            f"{step.delivered:,.0f}/s, {backlog:,} behind when the writers stopped "
            f"({'kept up' if step.kept_up else 'fell behind'})")
        self.report.details.append(
            f"P3 sustained {rate:,}/s: pgbench -R {rate / SUSTAINED_ROWS_PER_TX:g} tx/s x "
            f"{SUSTAINED_ROWS_PER_TX} rows, {SUSTAINED_CLIENTS} clients, {ended - started:.1f} s: "
            f"{step.produced:,.0f} changes/s written, {step.delivered:,.0f}/s delivered meanwhile, "
            f"{backlog:,} waiting when the writers stopped, delivered "
            + (f"{step.catch_up:.1f} s later" if step.catch_up is not None
               else "not within 120 s"))
        return step


async def run_p3(bench: Bench, report: Report, pgbench: Pgbench | None,
                 workdir: Path) -> DrainResults:
    return await P3(bench, report, pgbench, workdir).run()
