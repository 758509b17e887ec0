"""H - in-process handlers (README: Handlers) in the daemon, trigger source, on the shared
server; the handlers are bench/handler_sink.py's, named in the daemon's ``handlers:``.

* H drain - ``drain_events`` changes left in the outbox, drained through a no-op async
  handler, beside the same backlog drained to Redis pub/sub (a subscriber counting) in the
  same run. Target: at least the Redis drain's rate.
* H latency - commit → handler call at 100 and 1,000 changes/s (P4's writers). The same
  daemon also routes the same changes to Redis: that path's latency is the reference.
* H concurrency - a handler sleeping 10 ms, ``concurrency: 8``, over changes spread across
  1,000 keys: events/s (8 x 100/s is the ceiling), order per key checked.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import (
    APP_NAME,
    PAYLOAD,
    SCHEMA,
    TABLE,
    at_least,
    at_most,
    fmt_num,
    fmt_ratio,
    log,
    ratio,
)
from bench.database import Bench, daemon_config, route
from bench.latency import RECEIVE_WAIT, WARMUP_CHANGES, Writers, latencies_ms, phases
from bench.machine import wait_until_quiet
from bench.processes import Daemon, Subscriber
from bench.report import Report, Row
from connector.vocabulary import quote_ident

REPO_ROOT = Path(__file__).resolve().parent.parent
LATENCY_RATES = (100, 1_000)
LATENCY_TARGETS = {"p50": 1.5, "p99": 3.0}  # ms (issue 15)
SLEEP_KEYS = 1_000
SLEEP_CONCURRENCY = 8
SLEEP_CEILING = SLEEP_CONCURRENCY / 0.010  # events/s: 8 handlers busy 10 ms each
SLEEP_TARGET = 700.0
SPREAD_INSERT = f"""INSERT INTO {TABLE} (name, payload, updated_at)
SELECT 'k' || (g % {SLEEP_KEYS}), $1::jsonb, now() FROM generate_series(1, $2::int) AS g"""


def handler_config(bench: Bench, call: str, *, redis_channel: str | None = None,
                   **options: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "postgres": {"dsn": bench.url, "schema": SCHEMA, "application_name": APP_NAME},
        "handlers": [{"table": f"public.{TABLE}", "call": f"bench.handler_sink:{call}",
                      "operations": ["insert"], **options}],
        "logging": {"level": "info", "format": "json"},
    }
    if redis_channel is not None:
        config["publishers"] = {"redis": {"type": "redis", "url": bench.redis_url}}
        config["routes"] = [route(redis_channel)]
    return config


def handler_env(out: Path, expect: int = 0) -> dict[str, str]:
    """The daemon's environment: bench/ importable, where the handler reports."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT) + (os.pathsep + path if path else ""),
            "BENCH_HANDLER_OUT": str(out), "BENCH_HANDLER_EXPECT": str(expect)}


def done_at(out: Path) -> float | None:
    """The wall time the handler wrote once it had seen all it expected."""
    if not out.exists():
        return None
    for line in out.read_text().splitlines():
        if line.startswith("done "):
            return float(line.split()[1])
    return None


async def wait_done(out: Path, daemon: Daemon, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while (at := done_at(out)) is None:
        if not daemon.running or time.monotonic() > deadline:
            raise RuntimeError(f"{what}: the handler did not finish\n{daemon.log_tail()}")
        await asyncio.sleep(0.05)
    return at


async def handled(bench: Bench, workdir: Path, call: str, n: int, timeout: float,
                  **options: Any) -> tuple[float, Path]:
    """Start the daemon with the handler ``call`` on the backlog of ``n`` changes waiting;
    the rate from its consumer_active to the handler having seen all ``n``, and the file
    the handler wrote."""
    out = workdir / f"h-{call}.txt"
    out.unlink(missing_ok=True)
    daemon = await Daemon(workdir, f"h-{call}", handler_config(bench, call, **options),
                          env=handler_env(out, n)).start(timeout=60)
    try:
        assert daemon.active_at is not None
        finished = await wait_done(out, daemon, timeout, f"H {call}")
        return n / (finished - daemon.active_at), out
    finally:
        await daemon.stop()


async def run_handlers(bench: Bench, report: Report, workdir: Path) -> None:
    await drain(bench, report, workdir)
    await latency(bench, report, workdir)
    await concurrency(bench, report, workdir)


# --------------------------------------------------------------------------- drain


async def backlog(bench: Bench, n: int) -> None:
    """As P3's: the outbox filled, then VACUUM ANALYZE (the claim's plan needs the outbox's
    statistics; without them both drains ran at a third of their rate) and CHECKPOINT."""
    await bench.set_capture(True)
    await bench.reset()
    await bench.fill(n, captured=True)
    await bench.db.execute(f"VACUUM ANALYZE {quote_ident(SCHEMA)}.outbox")
    await bench.db.execute(f"VACUUM ANALYZE {TABLE}")
    await bench.db.execute("CHECKPOINT")


async def drain(bench: Bench, report: Report, workdir: Path) -> None:
    n = report.settings.drain_events
    await backlog(bench, n)
    await wait_until_quiet(report, "the H handler drain")
    handler_rate, _ = await handled(bench, workdir, "noop", n, max(120.0, n / 2_000))
    log(f"H drain: {n:,} changes through a no-op handler at {handler_rate:,.0f}/s")

    await backlog(bench, n)
    channel = f"{bench.channel}:h-drain"
    sub = await Subscriber(bench.redis_url, channel).start()
    try:
        await sub.reset()
        await sub.expect(n)
        await wait_until_quiet(report, "the H Redis drain")
        daemon = await Daemon(workdir, "h-redis", daemon_config(
            bench.url, bench.redis_url, channel)).start(timeout=60)
        try:
            assert daemon.active_at is not None
            if not await sub.wait(lambda: sub.done_at is not None, max(120.0, n / 2_000)):
                raise RuntimeError(f"H Redis drain: {sub.count:,}/{n:,}\n{daemon.log_tail()}")
            assert sub.done_at is not None
            redis_rate = n / (sub.done_at - daemon.active_at)
        finally:
            await daemon.stop()
    finally:
        await sub.stop()
    log(f"H drain: the same backlog to Redis pub/sub at {redis_rate:,.0f}/s")
    report.add(Row(f"H drain a backlog of {n:,} changes through a no-op async handler "
                   "(events/s)", fmt_num(handler_rate),
                   f"{fmt_num(redis_rate)} (to Redis pub/sub, same backlog)",
                   fmt_ratio(handler_rate / redis_rate),
                   at_least(handler_rate, redis_rate, "≥ the Redis drain")))


# --------------------------------------------------------------------------- latency


def stamped_ms(out: Path, prefix: str) -> list[float]:
    """Call time minus the row's updated_at, for the rows named ``prefix-…``."""
    got = []
    for line in out.read_text().splitlines():
        at, name, updated_at = line.split(" ", 2)
        if name.startswith(prefix + "-"):
            got.append((float(at) - dt.datetime.fromisoformat(updated_at).timestamp()) * 1000)
    return got


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(
        values) > 1 else values[0]


async def latency(bench: Bench, report: Report, workdir: Path) -> None:
    await bench.set_capture(True)
    await bench.reset()
    out = workdir / "h-stamp.txt"
    out.unlink(missing_ok=True)
    channel = f"{bench.channel}:h-latency"
    writers = Writers(bench.url)
    sub = await Subscriber(bench.redis_url, channel, record=True).start()
    daemon = await Daemon(workdir, "h-stamp", handler_config(
        bench, "stamp", redis_channel=channel), env=handler_env(out)).start()
    try:
        await asyncio.sleep(report.settings.settle_seconds)
        for phase in (p for p in phases(report) if p.steady in LATENCY_RATES):
            prefix = f"h-{phase.count}-{int(phase.rate)}"
            await sub.reset()
            await writers.write(f"warmup-{prefix}", WARMUP_CHANGES, min(phase.rate, 100))
            await wait_until_quiet(report, f"H latency at {phase.label}")
            await sub.reset()
            rate = await writers.write(prefix, phase.count, phase.rate)
            await sub.wait(lambda: sub.count >= phase.count, RECEIVE_WAIT)  # noqa: B023
            deadline = time.monotonic() + RECEIVE_WAIT
            while len(ours := stamped_ms(out, prefix)) < phase.count and (
                    time.monotonic() < deadline):
                await asyncio.sleep(0.05)
            ref = latencies_ms(await sub.dump(workdir / "h-latency-dump.txt"), prefix)
            what = phase.label + ("" if rate >= 0.9 * phase.rate else
                                  f" (achieved {rate:,.0f}/s)")
            log(f"H latency {phase.label}: handler p50 {fmt_num(pct(ours, 50), 2)} / p99 "
                f"{fmt_num(pct(ours, 99), 2)} ms; Redis route p50 {fmt_num(pct(ref, 50), 2)}")
            for name, p in (("p50", 50.0), ("p95", 95.0), ("p99", 99.0)):
                target = LATENCY_TARGETS.get(name)
                value, ref_value = pct(ours, p), pct(ref, p)
                report.add(Row(f"H latency commit → handler call, {what}, {name} (ms)",
                               fmt_num(value, 2),
                               f"{fmt_num(ref_value, 2)} (the same changes to Redis)",
                               fmt_ratio(ratio(value, ref_value)),
                               "—" if target is None else at_most(value, target,
                                                                  f"≤ {target:g} ms")))
            report.details.append(
                f"H latency {phase.label}: {len(ours)}/{phase.count} handler calls, "
                f"{len(ref)}/{phase.count} Redis messages, writers at {rate:,.0f}/s; the "
                "daemon runs the handler and a Redis route for the same table")
    finally:
        await daemon.stop()
        await sub.stop()
        await writers.close()


# --------------------------------------------------------------------------- concurrency


async def concurrency(bench: Bench, report: Report, workdir: Path) -> None:
    n = 800 if report.settings.smoke else 8_000
    await bench.set_capture(True)
    await bench.reset()
    await bench.db.execute(SPREAD_INSERT, PAYLOAD, n)
    await wait_until_quiet(report, "H concurrency")
    rate, out = await handled(bench, workdir, "sleepy", n, max(60.0, n / 100), key="name",
                              concurrency=SLEEP_CONCURRENCY)
    per_key: dict[str, list[int]] = collections.defaultdict(list)
    for line in out.read_text().splitlines():
        if not line.startswith("done "):
            name, row_id = line.split()
            per_key[name].append(int(row_id))
    disordered = [k for k, ids in per_key.items() if ids != sorted(ids)]
    if disordered or len(per_key) != min(n, SLEEP_KEYS):
        raise RuntimeError(f"H concurrency: {len(per_key)} keys seen, order broken for "
                           f"{len(disordered)} ({disordered[:5]})")
    log(f"H concurrency: {rate:,.0f} events/s, order per key held over {len(per_key)} keys")
    report.add(Row(f"H a handler sleeping 10 ms, concurrency {SLEEP_CONCURRENCY}, {n:,} "
                   f"changes over {min(n, SLEEP_KEYS):,} keys (events/s)", fmt_num(rate),
                   f"{fmt_num(SLEEP_CEILING)} (the ceiling: {SLEEP_CONCURRENCY} x 100/s)",
                   fmt_ratio(rate / SLEEP_CEILING),
                   at_least(rate, SLEEP_TARGET, f"≥ {SLEEP_TARGET:.0f}/s")))
    report.details.append(f"H concurrency: {n:,} changes, {len(per_key):,} keys, each key's "
                          "changes handled in commit order (checked)")
