"""Idle cost: the daemon's CPU and the queries it sends to PostgreSQL while nothing changes,
beside a bare asyncpg connection doing nothing (the reference), over the same window."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg

from bench.common import at_most, cpu_seconds, cpu_total, fmt_num, log
from bench.database import Bench, daemon_config
from bench.machine import wait_until_quiet
from bench.processes import Daemon, IdleConnection
from bench.report import Report, Row

TARGET_CPU = 1.0  # % of one core
TARGET_QPS = 20.0
BY_STATEMENTS = ("Δ of `calls` summed over `pg_stat_statements` for the bench database ÷ "
                 "window (the bench's own two readings left out).")
BY_TRANSACTIONS = (
    "Δ(`xact_commit` + `xact_rollback`) of `pg_stat_database` for the bench database ÷ "
    "window, read from a connection to another database. pg_stat_statements is not loaded on "
    "this server (it needs `shared_preload_libraries`, so a restart), hence transactions: "
    "while idle each of the daemon's queries (its outbox probe, liveness ping, housekeeping) "
    "is a transaction of its own, so transactions = queries, and nothing else uses the bench "
    "database during the window (the bare reference connection sends nothing). PostgreSQL "
    "publishes a session's counters up to about a second late, small against the window; "
    "`pg_stat_activity` (application_name `pgconnector-bench`) gives the daemon's sessions.")
STATEMENTS_SQL = """SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
  AND query NOT LIKE '%pg_stat_statements%'"""


class QueryCounter:
    """Queries sent to the bench database: pg_stat_statements when the server loads it,
    else transactions from pg_stat_database."""

    def __init__(self, bench: Bench, admin: asyncpg.Connection) -> None:
        self.bench = bench
        self.admin = admin
        self.statements = False

    async def setup(self) -> None:
        libraries = str(await self.admin.fetchval("SHOW shared_preload_libraries"))
        if "pg_stat_statements" in libraries:
            try:
                await self.bench.db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                self.statements = True
            except asyncpg.PostgresError as exc:
                log(f"idle: pg_stat_statements unusable ({exc}); counting transactions")

    @property
    def method(self) -> str:
        return BY_STATEMENTS if self.statements else BY_TRANSACTIONS

    async def read(self) -> int:
        if self.statements:
            return int(await self.bench.db.fetchval(STATEMENTS_SQL))
        value = await self.admin.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_catalog.pg_stat_database "
            "WHERE datname = $1", self.bench.dbname)
        return int(value or 0)


async def run_idle(bench: Bench, report: Report, workdir: Path) -> str:
    """Measure; returns how queries were counted (for the method notes)."""
    s = report.settings
    await bench.set_capture(True)
    await bench.reset()
    # The figures are read from another database, so reading them adds nothing to the
    # bench database's counters; the bench's own connection stays idle meanwhile.
    admin = await asyncpg.connect(bench.admin)
    counter = QueryCounter(bench, admin)
    await counter.setup()
    daemon = await Daemon(workdir, "idle", daemon_config(
        bench.url, bench.redis_url, bench.channel)).start()
    reference = await IdleConnection(bench.url).start()
    try:
        log(f"idle: letting the daemon settle for {s.settle_seconds:g} s")
        await asyncio.sleep(s.settle_seconds)
        await wait_until_quiet(report, "the idle window")
        backends = await bench.daemon_backends()
        xacts0 = await counter.read()
        cpu0, ref0, backend0 = (daemon.cpu_seconds(), cpu_seconds(reference.pid),
                                cpu_total(backends))
        t0 = time.monotonic()
        log(f"idle: measuring for {s.idle_seconds:g} s")
        await asyncio.sleep(s.idle_seconds)
        cpu1, ref1, backend1 = (daemon.cpu_seconds(), cpu_seconds(reference.pid),
                                cpu_total(backends))
        window = time.monotonic() - t0
        xacts1 = await counter.read()
        sessions = len(await bench.daemon_backends())
    finally:
        await reference.stop()
        await daemon.stop()
        await admin.close()
    if cpu0 is None or cpu1 is None or ref0 is None or ref1 is None:
        report.skipped.append("idle cost: /proc/<pid>/stat not readable")
        return counter.method
    cpu = (cpu1 - cpu0) / window * 100
    ref_cpu = (ref1 - ref0) / window * 100
    qps = (xacts1 - xacts0) / window
    backend_cpu = (backend1 - backend0) / window * 100
    log(f"idle: daemon {cpu:.2f} % of a core, {qps:.1f} queries/s; bare connection "
        f"{ref_cpu:.2f} %")
    report.add(Row("Idle: daemon CPU while nothing changes (% of one core)", fmt_num(cpu, 2),
                   fmt_num(ref_cpu, 2) + " (bare asyncpg connection)",
                   "n/a" if ref_cpu <= 0 else f"{cpu / ref_cpu:.0f}",
                   at_most(cpu, TARGET_CPU, f"≤ {TARGET_CPU:g} %")))
    report.add(Row("Idle: queries/s the daemon sends to PostgreSQL", fmt_num(qps, 1),
                   "0 (bare asyncpg connection)", "n/a",
                   at_most(qps, TARGET_QPS, f"≤ {TARGET_QPS:g}/s")))
    report.details.append(
        f"Idle: {window:.0f} s window after {s.settle_seconds:g} s of settling; "
        f"{xacts1 - xacts0} {'queries' if counter.statements else 'transactions'} in the bench "
        f"database ({sessions} daemon session(s) "
        f"in pg_stat_activity); the daemon's PostgreSQL backend(s) used {backend_cpu:.2f} % "
        f"of a core")
    return counter.method
