"""P1 - the writer's cost: pgbench single-row INSERT, UPDATE and DELETE transactions with
capture installed vs none, the daemon stopped (the trigger's own cost) and running on this
host (everything co-located); plus, for INSERT at the most clients, the pushdown and
no-wake-up variants."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    DELETE_SEQUENCE,
    PAYLOAD_LITERAL,
    TABLE,
    at_least,
    cpu_total,
    fmt_num,
    fmt_ratio,
    log,
)
from bench.database import Bench, Pgbench, daemon_config
from bench.machine import wait_until_quiet
from bench.processes import Daemon
from bench.report import Report, Row

NONE = "none"
CAPTURE = "capture"  # installed, daemon stopped
DRAINING = "capture+daemon"  # installed, the daemon running and draining on this host
FILTERED = "capture-filtered-out"  # pushdown: a route whose filter no write matches
NO_WAKEUP = "capture-no-wakeup"  # diagnostic: capture with the trigger's NOTIFY removed

OPS = ("insert", "update", "delete")
TARGET_STOPPED = 0.90  # capture/none at 8 clients, daemon stopped
TARGET_DRAINING = 0.80  # capture/none at 8 clients, daemon draining on the same box
TARGET_FILTERED = 0.95  # filtered-out writes cost at most 5 % (issue 4)
TARGET_CLIENTS = 8
DRAIN_WAIT = 120.0  # most seconds to wait for the daemon to empty the outbox after a run


def pgbench_scripts(update_rows: int) -> dict[str, str]:
    """One transaction each: insert a row; update a random one of ``update_rows``; delete the
    next row of the pre-filled table (the sequence hands each client its own row)."""
    return {
        "insert": ("\\set uid random(1, 1000000)\n"
                   f"INSERT INTO {TABLE} (name, payload, updated_at) "
                   f"VALUES ('user-' || :uid, {PAYLOAD_LITERAL}::jsonb, now());\n"),
        "update": (f"\\set id random(1, {update_rows})\n"
                   "\\set v random(1, 1000000)\n"
                   f"UPDATE {TABLE} SET name = 'user-' || :id || '-' || :v, updated_at = now() "
                   "WHERE id = :id;\n"),
        "delete": (f"DELETE FROM {TABLE} WHERE id = "
                   f"(SELECT pg_catalog.nextval('{DELETE_SEQUENCE}'));\n"),
    }


@dataclass
class Drained:
    """What the daemon had left when pgbench stopped, and how long it took to finish."""
    backlog: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (daemon, its session), cores

    def cpu_detail(self) -> str:
        return (f"the daemon used {', '.join(f'{d:.0%}' for d, _ in self.cpu)} of a core and "
                f"its PostgreSQL session {', '.join(f'{b:.0%}' for _, b in self.cpu)}")


def runs_detail(what: str, runs: dict[str, list[float]]) -> str:
    """``what: variant tps, tps; …`` for the report's individual runs."""
    return f"{what}: " + "; ".join(
        f"{variant} " + ", ".join(fmt_num(x) for x in values) + " tps"
        for variant, values in runs.items())


def target_rows(report: Report, what: str, median: dict[str, float], clients: int,
                stopped: str, draining: str) -> None:
    """The daemon-stopped and daemon-draining rows against none, with the targets at
    TARGET_CLIENTS."""
    none = median[NONE]
    for variant, label, target in ((stopped, "daemon stopped", TARGET_STOPPED),
                                   (draining, "daemon draining on this host", TARGET_DRAINING)):
        if variant not in median:
            continue
        r = median[variant] / none
        cell = at_least(r, target, f"≥ {target:.2f}") if clients == TARGET_CLIENTS else "—"
        report.add(Row(f"{what}, {label} (tps, median)", fmt_num(median[variant]),
                       fmt_num(none), fmt_ratio(r), cell))


class P1:
    def __init__(self, bench: Bench, report: Report, pgbench: Pgbench, workdir: Path,
                 draining: bool) -> None:
        self.bench = bench
        self.report = report
        self.s = report.settings
        self.pgbench = pgbench
        self.workdir = workdir
        self.draining = draining  # Redis answers: the daemon can run
        self.scripts = {op: pgbench.script(f"p1-{op}", text)
                        for op, text in pgbench_scripts(self.s.update_rows).items()}
        self.delete_rows = self.s.delete_rows
        self.drained: dict[tuple[str, int], Drained] = {}

    def prefill(self, op: str) -> int:
        return {"insert": 0, "update": self.s.update_rows, "delete": self.delete_rows}[op]

    async def prepare(self, op: str, variant: str, what: str) -> None:
        await self.bench.set_capture(variant != NONE, wakeup=variant != NO_WAKEUP,
                                     filtered=variant == FILTERED)
        await self.bench.reset(self.prefill(op))
        await wait_until_quiet(self.report, what)

    async def run(self) -> None:
        s = self.s
        top = max(s.clients)
        # Does the capture function send a wake-up NOTIFY that the diagnostic can remove?
        await self.bench.set_capture(True, wakeup=False)
        diagnose = not self.bench.wakeup
        if not diagnose:
            self.report.skipped.append(
                "P1 diagnostic: the capture function sends no NOTIFY to remove")
        if not self.draining:
            self.report.skipped.append("P1 with the daemon draining: Redis not reachable")
        if s.warmup_seconds:
            await self.prepare("insert", NONE, "the warm-up")
            log(f"P1 warm-up: {s.warmup_seconds} s at {top} clients, discarded")
            await self.pgbench.run(self.scripts["insert"], top, s.warmup_seconds)
        for op in OPS:
            for clients in s.clients:
                variants = [NONE, CAPTURE] + ([DRAINING] if self.draining else [])
                if op == "insert" and clients == top:
                    variants += [FILTERED] + ([NO_WAKEUP] if diagnose else [])
                runs = await self.rounds(op, clients, variants)
                self.add_rows(op, clients, runs, with_extra=op == "insert" and clients == top)

    async def rounds(self, op: str, clients: int, variants: list[str]) -> dict[str, list[float]]:
        s = self.s
        runs: dict[str, list[float]] = {v: [] for v in variants}
        for rnd in range(s.rounds):
            # Alternate, and rotate the order each round so drift does not favour one variant.
            shift = rnd % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                tps = await self.one(op, clients, variant, rnd)
                runs[variant].append(tps)
                log(f"P1 {op} {clients} client(s), round {rnd + 1}/{s.rounds}, {variant}: "
                    f"{tps:,.0f} tps")
        return runs

    async def one(self, op: str, clients: int, variant: str, rnd: int) -> float:
        """One timed pgbench run; a DELETE run that used up the pre-filled rows is run again
        on a table twice as large (it would otherwise end on cheap no-op deletes)."""
        for _ in range(4):
            await self.prepare(op, variant, f"P1 {op} {clients} client(s) {variant} "
                                            f"round {rnd + 1}")
            daemon = None
            if variant == DRAINING:
                daemon = await Daemon(self.workdir, f"p1-{op}-{clients}-{rnd}", daemon_config(
                    self.bench.url, self.bench.redis_url, self.bench.channel)).start()
                await asyncio.sleep(min(1.0, self.s.settle_seconds))  # its start-up CPU
            try:
                if daemon is not None:
                    backends = await self.bench.daemon_backends()
                    cpu0 = (daemon.cpu_seconds() or 0.0, cpu_total(backends), time.monotonic())
                result = await self.pgbench.run(self.scripts[op], clients, self.s.seconds)
                if daemon is not None:
                    took = time.monotonic() - cpu0[2]
                    self.drained.setdefault((op, clients), Drained()).cpu.append(
                        (((daemon.cpu_seconds() or 0.0) - cpu0[0]) / took,
                         (cpu_total(backends) - cpu0[1]) / took))
                    await self.wait_drained(op, clients, daemon)
            finally:
                if daemon is not None:
                    await daemon.stop()
            if op == "delete" and await self.exhausted():
                self.delete_rows *= 2
                log(f"P1 delete: every pre-filled row was deleted before the end; again with "
                    f"{self.delete_rows:,} rows")
                continue
            if variant in (CAPTURE, FILTERED, NO_WAKEUP):
                await self.check_outbox(op, result.transactions, clients,
                                        filtered=variant == FILTERED)
            return result.tps
        raise RuntimeError("P1 delete: could not pre-fill enough rows")

    async def exhausted(self) -> bool:
        used = await self.bench.db.fetchval(f"SELECT last_value FROM {DELETE_SEQUENCE}")
        return int(used) >= self.delete_rows

    async def wait_drained(self, op: str, clients: int, daemon: Daemon) -> None:
        stopped = time.monotonic()
        backlog = await self.bench.outbox_count()
        while not await self.bench.outbox_empty():
            if time.monotonic() - stopped > DRAIN_WAIT or not daemon.running:
                raise RuntimeError(f"P1: the daemon did not empty the outbox within "
                                   f"{DRAIN_WAIT:g} s of the run\n{daemon.log_tail()}")
            await asyncio.sleep(0.1)
        drained = self.drained.setdefault((op, clients), Drained())
        drained.backlog.append(backlog)
        drained.seconds.append(time.monotonic() - stopped)

    async def check_outbox(self, op: str, transactions: int, clients: int,
                           filtered: bool) -> None:
        """Sanity: capture wrote one outbox row per change (none when filtered)."""
        outbox = await self.bench.outbox_count()
        if filtered:
            if outbox:
                raise RuntimeError(f"filtered run: {outbox} outbox rows, expected none")
            return
        if op == "insert":
            changes = int(await self.bench.db.fetchval(f"SELECT count(*) FROM {TABLE}"))
        elif op == "delete":
            remaining = int(await self.bench.db.fetchval(f"SELECT count(*) FROM {TABLE}"))
            changes = self.delete_rows - remaining
        else:
            changes = transactions  # each updates one existing row
        if abs(outbox - changes) > (clients if op == "update" else 0):
            raise RuntimeError(f"P1 {op}: {changes} rows changed but {outbox} in the outbox")

    def add_rows(self, op: str, clients: int, runs: dict[str, list[float]],
                 with_extra: bool) -> None:
        median = {v: statistics.median(r) for v, r in runs.items()}
        none = median[NONE]
        who = f"{clients} client" + ("" if clients == 1 else "s")
        what = f"P1 single-row {op.upper()}, {who}"
        target_rows(self.report, what, median, clients, CAPTURE, DRAINING)
        if with_extra and FILTERED in median:
            rf = median[FILTERED] / none
            self.report.add(Row(
                f"P1 pushdown, {who}: capture installed, route filtered to rows these writes "
                "never match (tps)", fmt_num(median[FILTERED]), fmt_num(none), fmt_ratio(rf),
                at_least(rf, TARGET_FILTERED, f"≥ {TARGET_FILTERED:.2f}")))
        if with_extra and NO_WAKEUP in median:
            self.report.add(Row(
                f"P1 diagnostic, {who}: capture with the trigger's wake-up NOTIFY removed "
                "(tps)", fmt_num(median[NO_WAKEUP]), fmt_num(none),
                fmt_ratio(median[NO_WAKEUP] / none), "diagnostic only"))
        line = runs_detail(what, runs)
        drained = self.drained.get((op, clients))
        if drained is not None:
            line += (f" (daemon draining: {drained.cpu_detail()}; backlog when pgbench stopped "
                     f"{', '.join(fmt_num(b) for b in drained.backlog)} changes, outbox empty "
                     f"{', '.join(f'{x:.1f}' for x in drained.seconds)} s later)")
        self.report.details.append(line)


async def run_p1(bench: Bench, report: Report, pgbench: Pgbench, workdir: Path,
                 draining: bool) -> None:
    await P1(bench, report, pgbench, workdir, draining).run()
