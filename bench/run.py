"""pgconnector benchmark: what capture costs the application's writes, how fast the daemon
drains, how soon a change arrives, and what the daemon costs in memory and when idle.

    .venv/bin/python bench/run.py                          # full run, writes bench/RESULTS.md
    .venv/bin/python bench/run.py --smoke --output x.md    # under a minute; CI keeps it working
    .venv/bin/python bench/run.py --only P1 --clients 8    # some measures only
    .venv/bin/python bench/run.py --only WAL --clients 8 --seconds 3 --rounds 1 --output x.md

Measures, on a database of its own (dropped and recreated, dropped again at the end), against
the local PostgreSQL (DATABASE_URL or PG*) and Redis (REDIS_URL):

* P1 - writer cost: pgbench single-row INSERT/UPDATE/DELETE, capture vs none, daemon stopped
  and daemon draining on this host (bench/p1_writers.py).
* P2 - bulk writes: one statement inserting, one updating, many rows (bench/bulk.py).
* P3 - drain throughput to Redis pub/sub and stream, and the sustained rate (bench/drain.py).
* P4 - latency commit → Redis subscriber at steady rates (bench/latency.py).
* P5 - daemon memory over the drain and through a Redis outage (bench/memory.py).
* idle - the daemon's CPU and queries/s when nothing changes (bench/idle.py).
* H - in-process handlers: drain, latency, concurrency (bench/handlers.py).
* L - live subscriptions: 1,000 WebSocket clients, filtered and broadcast (bench/live.py).
* O - operators: a 100,000-change backlog applied with the README example's MERGE, beside the
  Redis drain of the same backlog; coalescing; the wal source (bench/operators.py).
* WAL - the wal source (capture.source: wal) measured as P1-P4 measure the trigger source,
  beside no capture and the trigger source, on a throwaway wal_level=logical cluster with the
  shared server's settings (bench/wal.py).

Progress goes to stderr, the results table to stdout and to a Markdown file, the chart to a
PNG beside it (bench/results.png). Missing a target never fails: the exit code is non-zero
only when the benchmark itself could not run.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/run.py` puts bench/ first on the path: put the repository there instead, so
# the harness is the `bench` package and none of its modules can shadow another one.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import asyncio
import dataclasses
import os
import shutil
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence

import redis
import redis.asyncio as aioredis

from bench.bulk import run_p2
from bench.chart import draw
from bench.common import BENCH_DIR, TABLE, Settings, admin_url, log, parse_only, redact
from bench.database import Bench, Pgbench
from bench.drain import DrainResults, run_p3
from bench.handlers import run_handlers
from bench.idle import run_idle
from bench.latency import run_p4
from bench.live import run_live
from bench.machine import code_fingerprint, git_describe, machine_info
from bench.memory import add_drain_rows, run_outage
from bench.method import method_notes
from bench.operators import run_operators
from bench.p1_writers import run_p1
from bench.report import Report
from bench.wal import run_wal
from bench.wal import unavailable as wal_unavailable
from connector import logs

WAL = "WAL"  # the wal source's measures (bench/wal.py), after the others


def output_paths(output: Path | None, smoke: bool) -> tuple[Path, Path]:
    """The results file and the chart's: bench/RESULTS.md and bench/results.png by default,
    a file in the temp directory with --smoke (the committed results stay), else ``output``
    and the same name with .png."""
    if output is None:
        output = (Path(tempfile.gettempdir()) / "pgconnector-bench-smoke.md" if smoke
                  else BENCH_DIR / "RESULTS.md")
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.resolve() == BENCH_DIR / "RESULTS.md":
        return output, BENCH_DIR / "results.png"
    return output, output.with_suffix(".png")


async def redis_reachable(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        return bool(await client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        await client.aclose()


class Runner:
    """Runs the chosen measures in order; one that fails is reported and the others go on."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.failed: list[str] = []

    async def step(self, name: str, fn: Callable[[], Awaitable[object]]) -> object:
        log(f"--- {name}")
        started = time.monotonic()
        try:
            result = await fn()
        except Exception as exc:
            traceback.print_exc()
            self.failed.append(name)
            self.report.notes.append(f"**{name} could not be measured**: "
                                     f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            log(f"{name} failed; going on with the others")
            return None
        log(f"--- {name} took {time.monotonic() - started:.0f} s")
        return result


async def main_async(args: argparse.Namespace, measures: tuple[str, ...]) -> int:
    started = time.monotonic()
    settings = Settings.for_mode(args.smoke)
    if args.clients:
        settings = dataclasses.replace(
            settings, clients=tuple(int(c) for c in args.clients.split(",")))
    if args.seconds:
        settings = dataclasses.replace(settings, seconds=args.seconds)
    if args.rounds:
        settings = dataclasses.replace(settings, rounds=args.rounds)
    report = Report(settings, measured=measures)
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    channel = f"pgconnector-bench:{uuid.uuid4().hex[:8]}:{TABLE}"
    bench = Bench(admin_url(), args.database, redis_url, channel)
    runner = Runner(report)
    queries_source = "not measured in this run."

    log(f"creating database {args.database}; measures: {', '.join(measures)}")
    code_before = code_fingerprint()
    await bench.create()
    try:
        report.machine = await machine_info(bench.db, redis_url)
        for key, value in report.machine.items():
            log(f"{key}: {value}")
        has_redis = await redis_reachable(redis_url)
        if not has_redis:
            log(f"Redis not reachable at {redact(redis_url)}")
        pgbench_bin = os.environ.get("PGBENCH") or shutil.which("pgbench")
        with tempfile.TemporaryDirectory(prefix="pgconnector-bench-") as tmp:
            workdir = Path(tmp)
            pgbench = None if pgbench_bin is None else Pgbench(pgbench_bin, bench.url, workdir)

            def skip(measure: str, why: str) -> None:
                report.skipped.append(f"{measure}: {why}")
                log(f"{measure} skipped: {why}")

            no_redis = f"Redis not reachable at {redact(redis_url)}"
            if "idle" in measures:
                if has_redis:
                    result = await runner.step("idle cost", lambda: run_idle(
                        bench, report, workdir))
                    if isinstance(result, str):
                        queries_source = result
                else:
                    skip("idle cost", no_redis)
            if "P1" in measures:
                if pgbench is None:
                    skip("P1", "pgbench not found (set PGBENCH or put it on PATH)")
                else:
                    await runner.step("P1 writer cost", lambda: run_p1(
                        bench, report, pgbench, workdir, has_redis))
            if "P2" in measures:
                await runner.step("P2 bulk writes", lambda: run_p2(bench, report))
            drains: DrainResults | None = None
            if "P3" in measures:
                if has_redis:
                    got = await runner.step("P3 drain throughput", lambda: run_p3(
                        bench, report, pgbench, workdir))
                    drains = got if isinstance(got, DrainResults) else None
                else:
                    skip("P3", no_redis)
            if "P4" in measures:
                if has_redis:
                    await runner.step("P4 latency", lambda: run_p4(bench, report, workdir))
                else:
                    skip("P4", no_redis)
            if "P5" in measures:
                if drains is not None:
                    add_drain_rows(report, drains)
                elif "P3" not in measures:
                    skip("P5 RSS over the drain", "P3 not run (it is P3's drain)")
                if shutil.which("redis-server") is None:
                    skip("P5 outage", "redis-server is not installed")
                else:
                    await runner.step("P5 Redis outage", lambda: run_outage(
                        bench, report, workdir))
            elif drains is not None:
                add_drain_rows(report, drains)
            if "H" in measures:
                if has_redis:
                    await runner.step("H handlers", lambda: run_handlers(
                        bench, report, workdir))
                else:
                    skip("H", no_redis)
            if "L" in measures:
                await runner.step("L live subscriptions", lambda: run_live(
                    bench, report, workdir))
            if "O" in measures:
                if has_redis:
                    await runner.step("O operators", lambda: run_operators(
                        bench, report, workdir))
                else:
                    skip("O", no_redis)
            if WAL in measures:
                why = wal_unavailable()
                if why is None:
                    await runner.step("WAL: the wal source on a throwaway logical cluster",
                                      lambda: run_wal(runner.step, report, bench.db,
                                                      args.database, redis_url, channel,
                                                      workdir, pgbench_bin, has_redis))
                else:
                    skip("WAL", f"no wal_level=logical cluster can be started: {why}")
    finally:
        log(f"cleaning up: uninstalling and dropping {args.database}")
        await bench.drop()
    if code_fingerprint() != code_before:
        report.notes.append(
            f"**The code under test changed during the run** (connector/ or sql/ edited or "
            f"committed meanwhile; {report.machine.get('pgconnector', '?')} at the start, "
            f"{await git_describe()} at the end): a daemon started after the change ran the "
            "new code, so figures taken before and after it are not comparable.")
        log("warning: the code under test changed during the run")

    output, chart = output_paths(args.output, args.smoke)
    why_not = draw(report.chart, chart, f"pgconnector benchmark, "
                   f"{report.started.strftime('%Y-%m-%d %H:%M UTC')}"
                   + (" (smoke: figures not meaningful)" if args.smoke else ""))
    if why_not is None:
        report.chart_file = (chart.name if chart.parent.resolve() == output.parent.resolve()
                             else str(chart))
        log(f"chart written to {chart}")
    else:
        report.chart_note = why_not
        log(f"no chart: {why_not}")
    report.duration = time.monotonic() - started
    with output.open("w", encoding="utf-8") as out:
        report.write(out, method_notes(settings, queries_source))
    log(f"results written to {output}")
    if runner.failed:
        log(f"could not measure: {', '.join(runner.failed)}")
        return 1
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true",
                        help="under a minute in all, to check the harness works (CI)")
    parser.add_argument("--output", type=Path, default=None,
                        help="Markdown results file (default: bench/RESULTS.md, the chart "
                             "bench/results.png; with --smoke, a file in the temp directory so "
                             "the committed results stay); the chart goes beside it as .png")
    parser.add_argument("--only", default=None,
                        help="measures to run, comma-separated: P1,P2,P3,P4,P5,idle,H,L,O,WAL "
                             "(default: all)")
    parser.add_argument("--only-p1", action="store_true", help="same as --only P1")
    parser.add_argument("--clients", default=None,
                        help="P1 client counts, comma-separated (default 1,4,8)")
    parser.add_argument("--seconds", type=int, default=None,
                        help="P1 and P1 wal: seconds of each pgbench run (default 10; smoke 1)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="P1 and P1 wal: rounds of each variant (default 3; smoke 1)")
    parser.add_argument("--database", default=None,
                        help="name of the database to create, use and drop (default "
                             "pgconnector_bench; with --smoke pgconnector_bench_smoke, so the "
                             "test suite's smoke run never drops a full run's database)")
    args = parser.parse_args(argv)
    if args.database is None:
        args.database = "pgconnector_bench_smoke" if args.smoke else "pgconnector_bench"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        measures = ("P1",) if args.only_p1 else parse_only(args.only)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The connector's own logs (install, in this process) go to stderr, and quietly.
    logs.configure(fmt="console", level="warning")
    started = time.monotonic()
    try:
        code = asyncio.run(main_async(args, measures))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception:
        traceback.print_exc()
        log("the benchmark itself failed (not a missed target)")
        return 1
    log(f"done in {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
