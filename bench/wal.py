"""WAL - the wal source (``capture.source: wal``: logical decoding through a replication slot)
measured the way P1-P4 measure the trigger source, beside no capture (and, for INSERT at the
most clients, the trigger source) on the same server in the same run.

The shared server runs with wal_level=replica and must stay so: these measures start a
throwaway cluster of their own (bench/cluster.py's PostgresCluster) with
wal_level=logical and the shared server's durability, memory and checkpoint settings, read from
it with SHOW at run time so the figures compare, and remove it at the end, also on failure.

* P1 wal - pgbench single-row INSERT/UPDATE/DELETE: none (no publication, no slot, replica
  identity default), wal with the daemon stopped (the slot accumulates), wal with the daemon
  draining on this host; P1's interleaving (bench/p1_writers.py's ``rounds``).
* P2 wal - one INSERT…SELECT and one UPDATE of ``bulk_rows`` rows, none vs wal, checked against
  the changes waiting in the slot.
  At the most clients, INSERT also runs with ``pg_recvlogical`` writing the slot's stream to
  /dev/null (the decoding floor: what any streaming client costs the writers and the server
  before doing anything with the changes), and the walsender's CPU is measured for it and for
  the daemon.
* P3 wal - the daemon drains a backlog of ``drain_events`` changes from the slot to pub/sub;
  the floor drains the same backlog (a copy of the slot) to /dev/null first.
* P4 wal - latency commit → subscriber at 100 and 1,000 changes/s.
* Idle wal - the daemon streaming with nothing to stream: its CPU, its walsender's, and the
  transactions it makes (the heartbeat's).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import asyncpg
import orjson
import redis.asyncio as aioredis

from bench.bulk import TARGET_INSERT, bulk_statement
from bench.cluster import PostgresCluster, pg_bindir
from bench.common import (
    APP_NAME,
    TABLE,
    at_least,
    at_most,
    cpu_seconds,
    cpu_total,
    fmt_num,
    fmt_ratio,
    log,
    rates_per_second,
    ratio,
)
from bench.database import Bench, Pgbench, PgbenchResult, daemon_config
from bench.latency import RECEIVE_WAIT, Latency, Writers, measure, phases
from bench.machine import wait_until_quiet
from bench.p1_writers import (
    DRAIN_WAIT,
    NONE,
    OPS,
    P1,
    Drained,
    runs_detail,
    target_rows,
)
from bench.processes import Daemon, IdleConnection, Subscriber
from bench.report import Report, Row, Series
from connector.config import from_dict as config_from_dict
from connector.store.install import wal_names

# What the wal source needs of the cluster; the shared server's own settings follow (COPIED).
LOGICAL = ("wal_level=logical", "max_replication_slots=10", "max_wal_senders=10")
# Read from the shared server with SHOW and given to the cluster, so both write, flush and
# checkpoint alike (PostgresCluster's own fsync=off and full_page_writes=off come first on its
# command line: a later -c wins).
COPIED = ("fsync", "full_page_writes", "synchronous_commit", "shared_buffers", "max_wal_size",
          "checkpoint_timeout", "wal_buffers")
# pg_ctl -o goes through a shell: only plain words make it to the server unchanged.
PLAIN_VALUE = re.compile(r"[A-Za-z0-9._-]+")

FLOOR = "pg_recvlogical"  # wal installed, pg_recvlogical streaming the slot to /dev/null
WAL = "wal"  # installed with capture.source wal, the daemon stopped: the slot accumulates
WAL_DAEMON = "wal+daemon"  # the same, the daemon running and draining on this host
TRIGGER = "trigger"  # the trigger source on this cluster, the daemon stopped
SOURCE: dict[str, str | None] = {NONE: None, WAL: "wal", WAL_DAEMON: "wal", TRIGGER: "trigger",
                                 FLOOR: "wal"}
FLOOR_APP = "pgconnector-bench-floor"  # pg_recvlogical's application_name

LATENCY_RATES = (100, 1_000)  # changes/s of P4 wal
LATENCY_TARGETS = {"p50": 1.5, "p99": 3.0}  # ms, at each of LATENCY_RATES (issue 14)
TARGET_WALSENDER = 0.15  # of a core, while the most clients insert
TARGET_DRAIN = 100_000  # events/s, P3 wal
TARGET_IDLE = 1.0  # % of a core, idle wal (daemon and walsender alike)
MARKER = "pgconnector-bench.delivered"  # the logical message wait_delivered writes

# The changes waiting in a slot, by kind, decoded without moving it: I, U, D, T.
SLOT_CHANGES = """
SELECT pg_catalog.chr(pg_catalog.get_byte(data, 0)) AS kind, count(*) AS n
FROM pg_catalog.pg_logical_slot_peek_binary_changes(
    $1, NULL, NULL, 'proto_version', '1', 'publication_names', $2)
WHERE pg_catalog.get_byte(data, 0) = ANY ('{73,85,68,84}'::int[])
GROUP BY 1"""
SLOT_LAG = """
SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(),
                                  confirmed_flush_lsn)::bigint
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1"""
WALSENDERS = """
SELECT pid FROM pg_catalog.pg_stat_activity
WHERE backend_type = 'walsender' AND datname = current_database() AND application_name = $1"""
SLOT_PAST = """
SELECT confirmed_flush_lsn >= $2::text::pg_catalog.pg_lsn
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1"""

Step = Callable[[str, Callable[[], Awaitable[object]]], Awaitable[object]]


# --------------------------------------------------------------------------- the cluster


def cluster_setting(name: str, value: str) -> str:
    """``name=value`` for the cluster's command line; a value that is not one plain word
    (which SHOW's never are for COPIED) is refused rather than passed through a shell."""
    if not PLAIN_VALUE.fullmatch(value):
        raise ValueError(f"{name} = {value!r}: not a value the bench can pass to pg_ctl")
    return f"{name}={value}"


async def shown(conn: asyncpg.Connection, names: Sequence[str]) -> dict[str, str]:
    """``SHOW name`` for each name (constants, never user input)."""
    return {name: str(await conn.fetchval(f"SHOW {name}")) for name in names}


def unavailable() -> str | None:
    """Why no throwaway cluster can be started here (no PostgreSQL binaries), else None."""
    try:
        pg_bindir()
    except RuntimeError as exc:
        return str(exc)
    return None


@contextlib.asynccontextmanager
async def logical_cluster(copied: Mapping[str, str]) -> AsyncIterator[PostgresCluster]:
    """A throwaway cluster with wal_level=logical and ``copied`` settings, removed on exit."""
    cluster = PostgresCluster(*LOGICAL, *(cluster_setting(n, v) for n, v in copied.items()))
    try:
        log(f"WAL: initdb and start a wal_level=logical cluster in {cluster.dir}")
        await asyncio.to_thread(cluster.init)
        await asyncio.to_thread(cluster.start)
        yield cluster
    finally:
        log("WAL: removing the throwaway cluster")
        await asyncio.to_thread(cluster.remove)


def same_filesystem(a: str, b: Path) -> str:
    try:
        return "yes" if os.stat(a).st_dev == os.stat(b).st_dev else "no"
    except OSError:
        return "unknown"


async def describe_cluster(bench: LogicalBench, shared: asyncpg.Connection,
                           copied: Mapping[str, str], cluster: PostgresCluster,
                           report: Report) -> None:
    """Check the cluster took the copied settings (fail if not: the figures would not
    compare) and say what it is in Individual runs."""
    have = await shown(bench.db, [*COPIED, "wal_level", "server_version"])
    wrong = [f"{n} is {have[n]}, the shared server's {v}" for n, v in copied.items()
             if have[n] != v]
    if have["wal_level"] != "logical":
        wrong.append(f"wal_level is {have['wal_level']}")
    if wrong:
        raise RuntimeError("the throwaway cluster did not take its settings: " + "; ".join(wrong))
    versions = await shown(shared, ["server_version", "data_directory"])
    if versions["server_version"].split()[0] != have["server_version"].split()[0]:
        report.notes.append(
            f"WAL measures: the throwaway cluster runs PostgreSQL {have['server_version']}, the "
            f"shared server {versions['server_version']}; compare WAL rows among themselves.")
    report.details.append(
        f"WAL cluster: PostgreSQL {have['server_version']} ({cluster.bindir}), data directory "
        f"{cluster.data} (same filesystem as the shared server's: "
        f"{same_filesystem(versions['data_directory'], cluster.dir)}); "
        + ", ".join(f"{n}={v}" for n, v in copied.items())
        + " as on the shared server; " + ", ".join(LOGICAL))


# --------------------------------------------------------------------------- the database


class LogicalBench(Bench):
    """The bench database on the logical cluster, captured by either source or none. Every
    reset leaves the slot empty (its backlog dropped), so no run starts behind."""

    def __init__(self, admin: str, dbname: str, redis_url: str, channel: str) -> None:
        super().__init__(admin, dbname, redis_url, channel)
        self.wal_daemon = daemon_config(self.url, redis_url, channel, capture={"source": "wal"})
        self.configs = {"trigger": self.config, "wal": config_from_dict(self.wal_daemon)}
        self.slot, self.publication = wal_names(self.configs["wal"])
        self.source: str | None = None

    async def use(self, source: str | None) -> None:
        """Install capture by ``source`` ("trigger" or "wal"), or none: uninstalled (slot and
        publication dropped with it, backlog discarded) and the table's replica identity
        back to default, which uninstall leaves at FULL. Checked every time."""
        if source != self.source:
            if self.source == "wal":
                await self.drop_backlog()  # uninstall would decode it all to count it
            await self.set_capture(False)
            await self.db.execute(f"ALTER TABLE {TABLE} REPLICA IDENTITY DEFAULT")
            self.source = None
            if source is not None:
                self.config = self.configs[source]
                await self.set_capture(True)
                self.source = source
        row = await self.db.fetchrow(
            "SELECT (SELECT relreplident::text FROM pg_catalog.pg_class "
            "        WHERE oid = $1::regclass) AS identity,"
            " (SELECT count(*) FROM pg_catalog.pg_replication_slots) AS slots,"
            " (SELECT count(*) FROM pg_catalog.pg_publication) AS publications", TABLE)
        want = ("f", 1, 1) if source == "wal" else ("d", 0, 0)
        if tuple(row) != want:
            raise RuntimeError(f"capture {source or 'none'}: replica identity, slots and "
                               f"publications are {tuple(row)}, expected {want}")

    async def reset(self, rows: int = 0) -> None:
        await super().reset(rows)
        if self.source == "wal":
            await self.drop_backlog()

    async def drop_backlog(self) -> None:
        """Move the slot to the end of the WAL: what it held is discarded (the daemon must
        not be running)."""
        await self.db.execute("SELECT pg_catalog.pg_replication_slot_advance("
                              "$1, pg_catalog.pg_current_wal_lsn())", self.slot)

    async def slot_changes(self) -> dict[str, int]:
        """The changes waiting in the slot by kind ("I", "U", "D", "T"): a peek, which decodes
        them without moving the slot (the daemon must not be running)."""
        rows = await self.db.fetch(SLOT_CHANGES, self.slot, self.publication)
        return {r["kind"]: int(r["n"]) for r in rows}

    async def outbox_count(self) -> int:
        """Changes captured and not delivered: the outbox's rows, or with the wal source the
        slot's inserts, updates, deletes and truncates (so P1's check_outbox checks either)."""
        if self.source != "wal":
            return await super().outbox_count()
        return sum((await self.slot_changes()).values())

    async def slot_lag(self) -> int:
        """Bytes of WAL between the slot's confirmed position and the WAL's end."""
        return int(await self.db.fetchval(SLOT_LAG, self.slot) or 0)

    async def wait_delivered(self, daemon: Daemon, timeout: float) -> tuple[int, float]:
        """Until the running daemon has delivered every change written so far: a transaction
        with a logical message and no published change goes into the WAL after them, and the
        daemon moves the slot past it only once it has acknowledged everything before it.
        Returns the slot's lag (bytes) when called and the seconds the wait took."""
        started = time.monotonic()
        lag = await self.slot_lag()
        marker = await self.db.fetchval(
            "SELECT pg_catalog.pg_logical_emit_message(true, $1, '')::text", MARKER)
        while not await self.db.fetchval(SLOT_PAST, self.slot, marker):
            if not daemon.running:
                raise RuntimeError(f"the daemon exited before it caught up:\n{daemon.log_tail()}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the daemon did not catch up within {timeout:g} s (the slot "
                                   f"is {await self.slot_lag():,} bytes behind)")
            await asyncio.sleep(0.05)
        return lag, time.monotonic() - started

    async def check_delivered(self) -> None:
        """After the daemon caught up and stopped: nothing of ours is left in the slot."""
        left = await self.slot_changes()
        if left:
            raise RuntimeError(f"the daemon caught up, yet the slot still holds {left}")

    async def walsenders(self, application_name: str) -> list[int]:
        """Server pids of the walsenders streaming to ``application_name`` in this database."""
        return [r["pid"] for r in await self.db.fetch(WALSENDERS, application_name)]

    async def close(self) -> None:
        """The cluster goes with everything in it: no uninstall, no DROP DATABASE."""
        if self.conn is not None:
            await self.conn.close()


class Floor:
    """``pg_recvlogical`` streaming a slot to /dev/null (no fsync, status every second): the
    decoding floor, what PostgreSQL's own client costs the server and the writers before
    anything is done with the changes. With ``endpos`` it stops there by itself."""

    def __init__(self, bench: LogicalBench, slot: str, endpos: str | None = None) -> None:
        self.bench = bench
        self.cmd = [str(pg_bindir() / "pg_recvlogical"), "-d", bench.url, "--slot", slot,
                    "--start", "-o", "proto_version=1",
                    "-o", f"publication_names={bench.publication}", "-f", "/dev/null",
                    "-F", "0", "-s", "1", "--no-loop"]
        if endpos is not None:
            self.cmd += ["-E", endpos]
        self.proc: asyncio.subprocess.Process | None = None
        self.walsender: list[int] = []

    async def start(self, timeout: float = 10.0) -> Floor:
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PGAPPNAME": FLOOR_APP})
        deadline = time.monotonic() + timeout
        while not (walsender := await self.bench.walsenders(FLOOR_APP)):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pg_recvlogical did not start streaming: {await self.err()}")
            await asyncio.sleep(0.02)
        self.walsender = walsender
        return self

    async def err(self) -> str:
        assert self.proc is not None and self.proc.stderr is not None
        if self.proc.returncode is None:
            return "(still running)"
        return (await self.proc.stderr.read()).decode(errors="replace").strip()

    def walsender_cpu(self) -> float:
        return cpu_total(self.walsender)

    async def wait(self, timeout: float) -> float:
        """Until it reached ``endpos`` and exited; returns its walsender's CPU seconds, sampled
        every 0.1 s meanwhile (a process gone has none to read)."""
        assert self.proc is not None
        deadline, cpu = time.monotonic() + timeout, 0.0
        while self.proc.returncode is None:
            cpu = max(cpu, self.walsender_cpu())
            if time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(f"pg_recvlogical did not reach its end within {timeout:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 0.1)
        if self.proc.returncode != 0:
            raise RuntimeError(f"pg_recvlogical exited with {self.proc.returncode}: "
                               f"{await self.err()}")
        return cpu

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop it, and wait until its walsender is gone too (until then the slot is busy)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        deadline = time.monotonic() + timeout
        while await self.bench.walsenders(FLOOR_APP):
            if time.monotonic() > deadline:
                raise RuntimeError(f"pg_recvlogical's walsender still runs {timeout:g} s after "
                                   "it exited")
            await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- P1


class WalP1(P1):
    """P1's runs on the logical cluster; its ``rounds`` interleave the variants."""

    def __init__(self, bench: LogicalBench, report: Report, pgbench: Pgbench, workdir: Path,
                 draining: bool) -> None:
        super().__init__(bench, report, pgbench, workdir, draining)
        self.logical = bench
        # Smoke: INSERT only, which still runs every variant (keeps the smoke short).
        self.ops = ("insert",) if self.s.smoke else OPS
        # (op, clients) -> variant -> the walsender's CPU (cores) during each timed run
        self.walsender: dict[tuple[str, int], dict[str, list[float]]] = {}

    async def prepare(self, op: str, variant: str, what: str) -> None:
        await self.logical.use(SOURCE[variant])
        await self.logical.reset(self.prefill(op))
        await wait_until_quiet(self.report, what)

    async def run(self) -> None:
        s = self.s
        top = max(s.clients)
        if not self.draining:
            self.report.skipped.append("P1 wal source with the daemon draining: Redis not "
                                       "reachable")
        if s.warmup_seconds:
            await self.prepare("insert", NONE, "the P1 wal warm-up")
            log(f"P1 wal warm-up: {s.warmup_seconds} s at {top} clients, discarded")
            await self.pgbench.run(self.scripts["insert"], top, s.warmup_seconds)
        for op in self.ops:
            for clients in s.clients:
                variants = [NONE, WAL] + ([WAL_DAEMON] if self.draining else [])
                with_trigger = op == "insert" and clients == top
                runs = await self.rounds(op, clients,
                                         variants + [TRIGGER, FLOOR] * with_trigger)
                self.add_rows(op, clients, runs, with_extra=with_trigger)

    async def one(self, op: str, clients: int, variant: str, rnd: int) -> float:
        """One timed pgbench run, checked: with the daemon stopped, one change waits per row
        written (slot or outbox); with it running, it caught up and left nothing. A DELETE run
        that used up the pre-filled rows runs again on a table twice as large."""
        for _ in range(4):
            await self.prepare(op, variant, f"P1 wal {op} {clients} client(s) {variant} "
                                            f"round {rnd + 1}")
            if variant == WAL_DAEMON:
                result = await self.draining_run(op, clients, rnd)
            elif variant == FLOOR:
                result = await self.floor_run(op, clients)
            else:
                result = await self.pgbench.run(self.scripts[op], clients, self.s.seconds)
            if op == "delete" and await self.exhausted():
                self.delete_rows *= 2
                log(f"P1 wal delete: every pre-filled row was deleted before the end; again "
                    f"with {self.delete_rows:,} rows")
                continue
            if variant in (WAL, TRIGGER):
                await self.check_outbox(op, result.transactions, clients, filtered=False)
            return result.tps
        raise RuntimeError("P1 wal delete: could not pre-fill enough rows")

    async def draining_run(self, op: str, clients: int, rnd: int) -> PgbenchResult:
        daemon = await Daemon(self.workdir, f"wal-p1-{op}-{clients}-{rnd}",
                              self.logical.wal_daemon).start()
        try:
            await asyncio.sleep(min(1.0, self.s.settle_seconds))  # its start-up CPU
            backends = await self.logical.daemon_backends()
            walsender = await self.logical.walsenders(APP_NAME)
            cpu0, session0 = daemon.cpu_seconds() or 0.0, cpu_total(backends)
            sender0 = cpu_total(walsender)
            began = time.monotonic()
            result = await self.pgbench.run(self.scripts[op], clients, self.s.seconds)
            took = time.monotonic() - began
            drained = self.drained.setdefault((op, clients), Drained())
            drained.cpu.append((((daemon.cpu_seconds() or 0.0) - cpu0) / took,
                                (cpu_total(backends) - session0) / took))
            self.walsender.setdefault((op, clients), {}).setdefault(WAL_DAEMON, []).append(
                (cpu_total(walsender) - sender0) / took)
            lag, seconds = await self.logical.wait_delivered(daemon, DRAIN_WAIT)
            drained.backlog.append(lag)
            drained.seconds.append(seconds)
        finally:
            await daemon.stop()
        await self.logical.check_delivered()
        return result

    async def floor_run(self, op: str, clients: int) -> PgbenchResult:
        """pgbench while pg_recvlogical streams the slot to /dev/null; it must have kept up
        (the slot within a second's status interval of the end when pgbench stopped)."""
        floor = await Floor(self.logical, self.logical.slot).start()
        try:
            sender0, began = floor.walsender_cpu(), time.monotonic()
            result = await self.pgbench.run(self.scripts[op], clients, self.s.seconds)
            took = time.monotonic() - began
            self.walsender.setdefault((op, clients), {}).setdefault(FLOOR, []).append(
                (floor.walsender_cpu() - sender0) / took)
        finally:
            await floor.stop()
        return result

    def add_rows(self, op: str, clients: int, runs: dict[str, list[float]],
                 with_extra: bool) -> None:
        median = {v: statistics.median(r) for v, r in runs.items()}
        none = median[NONE]
        who = f"{clients} client" + ("" if clients == 1 else "s")
        what = f"single-row {op.upper()}, {who}"
        target_rows(self.report, f"P1 wal source, {what}", median, clients, WAL, WAL_DAEMON)
        if with_extra and TRIGGER in median:
            self.report.add(Row(
                f"P1 trigger source on the same logical cluster, {what}, daemon stopped (tps, "
                "median)", fmt_num(median[TRIGGER]), fmt_num(none),
                fmt_ratio(median[TRIGGER] / none), "comparison (targets: P1 rows above)"))
        if with_extra and FLOOR in median:
            self.report.add(Row(
                f"P1 wal, the decoding floor: pg_recvlogical streaming the slot to /dev/null on "
                f"this host, {what} (tps, median)", fmt_num(median[FLOOR]), fmt_num(none),
                fmt_ratio(median[FLOOR] / none), "reference for the draining row"))
        senders = self.walsender.get((op, clients), {})
        if WAL_DAEMON in senders:
            ours = statistics.median(senders[WAL_DAEMON])
            floor = statistics.median(senders[FLOOR]) if FLOOR in senders else None
            self.report.add(Row(
                f"P1 wal source, the walsender's CPU while {who} {op} and the daemon drains "
                "(% of a core, median)", fmt_num(ours * 100),
                "—" if floor is None else f"{fmt_num(floor * 100)} (pg_recvlogical's)",
                "—" if not floor else fmt_ratio(ours / floor),
                at_most(ours, TARGET_WALSENDER, f"≤ {TARGET_WALSENDER:.0%}")
                if clients == max(self.s.clients) else "—"))
        line = runs_detail(f"P1 wal cluster, {what}", runs)
        drained = self.drained.get((op, clients))
        if drained is not None:
            line += (f" (wal+daemon: {drained.cpu_detail()}; the slot was "
                     f"{', '.join(fmt_num(b / 1024) for b in drained.backlog)} kB "
                     f"behind when pgbench stopped, caught up "
                     f"{', '.join(f'{x:.1f}' for x in drained.seconds)} s later)")
        if senders:
            line += "; walsender CPU: " + "; ".join(
                f"{v} " + ", ".join(f"{x:.0%}" for x in xs) for v, xs in senders.items())
        self.report.details.append(line)


# --------------------------------------------------------------------------- P2


async def run_wal_p2(bench: LogicalBench, report: Report) -> None:
    """One statement writing ``bulk_rows`` rows, none vs wal (daemon stopped), alternating
    first as P2 does; each wal run must leave exactly that many changes in the slot."""
    s = report.settings
    for op, kind, statement in (("insert", "I", "INSERT…SELECT"),
                                ("update", "U", "UPDATE (every row)")):
        runs: dict[str, list[float]] = {NONE: [], WAL: []}
        for rnd in range(s.bulk_rounds):
            for variant in (NONE, WAL) if rnd % 2 == 0 else (WAL, NONE):
                await bench.use(SOURCE[variant])
                await bench.reset(s.bulk_rows if op == "update" else 0)
                await wait_until_quiet(report, f"P2 wal {op} {variant} round {rnd + 1}")
                runs[variant].append(await bulk_statement(bench, op, s.bulk_rows))
                log(f"P2 wal {op} of {s.bulk_rows:,} rows, round {rnd + 1}/{s.bulk_rounds}, "
                    f"{variant}: {runs[variant][-1]:,.0f} ms")
                if variant == WAL:
                    changes = await bench.slot_changes()
                    if changes.get(kind, 0) != s.bulk_rows or len(changes) != 1:
                        raise RuntimeError(f"P2 wal {op}: {s.bulk_rows:,} rows written but the "
                                           f"slot holds {changes}")
        none, wal = statistics.median(runs[NONE]), statistics.median(runs[WAL])
        r = wal / none
        target = at_most(r, TARGET_INSERT, f"≤ {TARGET_INSERT}x") if op == "insert" else "—"
        report.add(Row(f"P2 wal source, one {statement} of {s.bulk_rows:,} rows, daemon "
                       "stopped (ms, median)", fmt_num(wal), fmt_num(none), fmt_ratio(r, "x"),
                       target))
        report.details.append(
            f"P2 wal cluster, {op} of {s.bulk_rows:,} rows: "
            + "; ".join(f"{v} " + ", ".join(fmt_num(x) for x in runs[v]) + " ms"
                        for v in (NONE, WAL))
            + f" (each wal run left {s.bulk_rows:,} changes in the slot)")


# --------------------------------------------------------------------------- P3


async def run_wal_p3(bench: LogicalBench, report: Report, workdir: Path) -> None:
    """A backlog of ``drain_events`` inserts in the slot (statements of 100,000 rows); the
    floor drains it from a copy of the slot to /dev/null, then the daemon drains it to
    pub/sub, events/s counted by bench/subscriber.py as in P3."""
    n = report.settings.drain_events
    await bench.use("wal")
    await bench.reset()
    started = time.monotonic()
    await bench.fill(n, captured=True)
    filled = time.monotonic() - started
    await bench.db.execute("CHECKPOINT")
    lag = await bench.slot_lag()
    log(f"P3 wal backlog: {n:,} changes written in {filled:.1f} s, the slot "
        f"{lag / 1024 / 1024:,.0f} MB behind")
    floor_rate, floor_cpu = await floor_drain(bench, report, n)
    sub = await Subscriber(bench.redis_url, bench.channel).start()
    try:
        await sub.reset()
        await sub.expect(n)
        await wait_until_quiet(report, "the P3 wal drain")
        daemon = await Daemon(workdir, "wal-p3", bench.wal_daemon).start(timeout=60)
        assert daemon.active_at is not None
        active_at, cpu0, peak_kb = daemon.active_at, daemon.cpu_seconds(), 0
        try:
            deadline = time.monotonic() + max(120.0, n / 2_000)
            while not await sub.wait(lambda: sub.done_at is not None, 0.5):
                peak_kb = max(peak_kb, daemon.rss_kb() or 0)
                if sub.closed or not daemon.running or time.monotonic() > deadline:
                    raise RuntimeError(f"P3 wal: {sub.count:,}/{n:,} delivered when the drain "
                                       f"stopped\n{daemon.log_tail()}")
            cpu1 = daemon.cpu_seconds()
            await bench.wait_delivered(daemon, DRAIN_WAIT)
        finally:
            await daemon.stop()
    finally:
        await sub.stop()
    await bench.check_delivered()
    assert sub.done_at is not None
    seconds = sub.done_at - active_at
    rate = n / seconds
    log(f"P3 wal: {rate:,.0f} events/s ({n:,} in {seconds:.1f} s)")
    report.add(Row(f"P3 wal source: drain a backlog of {n:,} changes from the slot to Redis "
                   "pub/sub, a subscriber counting (events/s)", fmt_num(rate),
                   f"{fmt_num(floor_rate)} (pg_recvlogical to /dev/null)",
                   fmt_ratio(rate / floor_rate),
                   at_least(rate, TARGET_DRAIN, f"≥ {TARGET_DRAIN:,}/s")))
    report.chart.throughput.append(Series("wal source → Redis pub/sub (logical cluster)",
                                          rates_per_second([(t - active_at, c)
                                                            for t, c in sub.samples])))
    cpu = ("" if cpu0 is None or cpu1 is None
           else f"; daemon CPU {(cpu1 - cpu0) / seconds:.0%} of a core")
    report.details.append(
        f"P3 wal drain: {n:,} changes written in {filled:.1f} s (slot {lag / 1024 / 1024:,.0f} "
        f"MB behind), everything in Redis {seconds:.1f} s after the daemon's consumer_active"
        f"{cpu}, its RSS at most {peak_kb / 1024:.0f} MB; the slot then caught up with nothing "
        f"left in it. The floor (pg_recvlogical from a copy of the slot to /dev/null) took "
        f"{n / floor_rate:.1f} s, its walsender {floor_cpu:.0%} of a core")


async def floor_drain(bench: LogicalBench, report: Report, n: int) -> tuple[float, float]:
    """pg_recvlogical drains the backlog from a copy of the slot (the original keeps it for
    the daemon) to the WAL's end; returns changes/s and its walsender's CPU (cores)."""
    copy = f"{bench.slot}_floor"
    end = await bench.db.fetchval("SELECT pg_catalog.pg_current_wal_lsn()::text")
    await bench.db.execute("SELECT pg_catalog.pg_copy_logical_replication_slot($1, $2)",
                           bench.slot, copy)
    try:
        await wait_until_quiet(report, "the P3 wal floor")
        began = time.monotonic()
        floor = await Floor(bench, copy, endpos=end).start()
        cpu0 = floor.walsender_cpu()
        try:
            cpu = await floor.wait(max(120.0, n / 2_000)) - cpu0
            took = time.monotonic() - began
        finally:
            await floor.stop()
    finally:
        await bench.db.execute("SELECT pg_catalog.pg_drop_replication_slot($1)", copy)
    log(f"P3 wal floor: pg_recvlogical drained {n:,} changes in {took:.1f} s "
        f"({n / took:,.0f}/s)")
    return n / took, cpu / took


# --------------------------------------------------------------------------- P4


async def run_wal_p4(bench: LogicalBench, report: Report, workdir: Path) -> None:
    """P4's phases at LATENCY_RATES (bench/latency.py's ``measure``): the reference (capture
    not installed, the writer publishing after COMMIT), then the wal source, per rate."""
    publisher = aioredis.Redis.from_url(bench.redis_url)

    async def publish_after_commit(name: str, updated_at: dt.datetime) -> None:
        await publisher.publish(bench.channel, orjson.dumps(
            {"new": {"name": name, "updated_at": updated_at.isoformat()}}))

    writers = Writers(bench.url)
    sub = await Subscriber(bench.redis_url, bench.channel, record=True).start()
    try:
        for phase in (p for p in phases(report) if p.steady in LATENCY_RATES):
            await bench.use(None)
            await bench.reset()
            await wait_until_quiet(report, f"the P4 wal reference at {phase.label}")
            ref = await measure(phase, "wal-reference", writers, sub, workdir,
                                publish_after_commit)
            await bench.use("wal")
            await bench.reset()
            daemon = await Daemon(workdir, f"wal-p4-{phase.steady}", bench.wal_daemon).start()
            try:
                await asyncio.sleep(report.settings.settle_seconds)
                await wait_until_quiet(report, f"P4 wal at {phase.label}")
                ours = await measure(phase, "wal", writers, sub, workdir)
            finally:
                await daemon.stop()
            add_latency_rows(report, ours, ref)
    finally:
        await sub.stop()
        await writers.close()
        await publisher.aclose()


def add_latency_rows(report: Report, ours: Latency, ref: Latency) -> None:
    what = ours.phase.label
    if ours.rate < 0.9 * ours.phase.rate:
        what += f" (achieved {ours.rate:,.0f}/s)"
    for name, p in (("p50", 50.0), ("p95", 95.0), ("p99", 99.0)):
        target = LATENCY_TARGETS.get(name)
        report.add(Row(f"P4 wal source: latency commit → subscriber, {what}, {name} (ms)",
                       fmt_num(ours.pct(p), 2), fmt_num(ref.pct(p), 2),
                       fmt_ratio(ratio(ours.pct(p), ref.pct(p))),
                       "—" if target is None else at_most(ours.pct(p), target,
                                                          f"≤ {target:g} ms")))
    report.details.append(
        f"P4 wal {ours.phase.label}: {len(ours.samples_ms)}/{ours.sent} changes received, "
        f"writers achieved {ours.rate:,.0f}/s, max {fmt_num(ours.max, 1)} ms; reference "
        f"(publish after COMMIT, same cluster) {len(ref.samples_ms)}/{ref.sent}, max "
        f"{fmt_num(ref.max, 1)} ms")
    if ours.lost:
        report.notes.append(f"P4 wal {ours.phase.label}: {ours.lost} change(s) not received "
                            f"within {RECEIVE_WAIT:g} s")


# --------------------------------------------------------------------------- idle


async def run_wal_idle(bench: LogicalBench, report: Report, workdir: Path) -> None:
    """The daemon streaming with nothing to stream, beside a bare asyncpg connection: its
    CPU, its walsender's, and the transactions it makes in the database (the heartbeat's
    upsert; a streaming reader sends no polling queries)."""
    s = report.settings
    await bench.use("wal")
    await bench.reset()
    admin = await asyncpg.connect(bench.admin)

    async def transactions() -> int:
        return int(await admin.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_catalog.pg_stat_database "
            "WHERE datname = $1", bench.dbname) or 0)

    daemon = await Daemon(workdir, "wal-idle", bench.wal_daemon).start()
    reference = await IdleConnection(bench.url).start()
    try:
        await asyncio.sleep(s.settle_seconds)
        await wait_until_quiet(report, "the idle wal window")
        walsender = await bench.walsenders(APP_NAME)
        xacts0, t0 = await transactions(), time.monotonic()
        cpu0, ref0, sender0 = daemon.cpu_seconds(), cpu_seconds(reference.pid), cpu_total(
            walsender)
        await asyncio.sleep(s.idle_seconds)
        cpu1, ref1, sender1 = daemon.cpu_seconds(), cpu_seconds(reference.pid), cpu_total(
            walsender)
        window = time.monotonic() - t0
        xacts = await transactions() - xacts0
    finally:
        await reference.stop()
        await daemon.stop()
        await admin.close()
    if None in (cpu0, cpu1, ref0, ref1) or not walsender:
        report.skipped.append("idle wal: /proc/<pid>/stat or the walsender not readable")
        return
    assert cpu0 is not None and cpu1 is not None and ref0 is not None and ref1 is not None
    cpu, ref = (cpu1 - cpu0) / window * 100, (ref1 - ref0) / window * 100
    sender = (sender1 - sender0) / window * 100
    log(f"idle wal: daemon {cpu:.2f} %, walsender {sender:.2f} %, {xacts / window:.2f} "
        f"transactions/s")
    bare = f"{fmt_num(ref, 2)} (bare asyncpg connection)"
    report.add(Row("Idle wal: daemon CPU while nothing changes (% of one core)", fmt_num(cpu, 2),
                   bare, "n/a", at_most(cpu, TARGET_IDLE, f"≤ {TARGET_IDLE:g} %")))
    report.add(Row("Idle wal: its walsender's CPU while nothing changes (% of one core)",
                   fmt_num(sender, 2), bare, "n/a",
                   at_most(sender, TARGET_IDLE, f"≤ {TARGET_IDLE:g} %")))
    report.add(Row("Idle wal: transactions/s the daemon makes while nothing changes",
                   fmt_num(xacts / window, 2), "0 (bare asyncpg connection)", "n/a",
                   "reported: none polls the slot (housekeeping every 5 s, the heartbeat "
                   "every 10 s, liveness pings)"))
    report.details.append(
        f"Idle wal: {window:.0f} s window after {s.settle_seconds:g} s of settling; {xacts} "
        "transactions in the bench database (pg_stat_database, read from another database)")


# --------------------------------------------------------------------------- all of it


async def run_wal(step: Step, report: Report, shared: asyncpg.Connection, dbname: str,
                  redis_url: str, channel: str, workdir: Path, pgbench_bin: str | None,
                  has_redis: bool) -> None:
    """Start the cluster, run P1-P4 wal as steps of their own (one failing, the others go
    on), remove the cluster."""
    copied = await shown(shared, COPIED)
    async with logical_cluster(copied) as cluster:
        bench = LogicalBench(cluster.admin_url, dbname, redis_url, f"{channel}:wal")
        await bench.create()
        try:
            await describe_cluster(bench, shared, copied, cluster, report)
            no_redis = "Redis not reachable"
            if pgbench_bin is None:
                report.skipped.append("P1 wal: pgbench not found")
            else:
                pgbench = Pgbench(pgbench_bin, bench.url, workdir)
                await step("P1 wal writer cost", lambda: WalP1(
                    bench, report, pgbench, workdir, has_redis).run())
            await step("P2 wal bulk writes", lambda: run_wal_p2(bench, report))
            if has_redis:
                await step("P3 wal drain", lambda: run_wal_p3(bench, report, workdir))
                await step("P4 wal latency", lambda: run_wal_p4(bench, report, workdir))
                await step("Idle wal", lambda: run_wal_idle(bench, report, workdir))
            else:
                report.skipped.extend([f"P3 wal: {no_redis}", f"P4 wal: {no_redis}",
                                       f"Idle wal: {no_redis}"])
        finally:
            await bench.close()
