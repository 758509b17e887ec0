"""pgconnector benchmark: what capture costs the application's writes, and how fast changes arrive.

    .venv/bin/python bench/run.py                          # full run, writes bench/RESULTS.md
    .venv/bin/python bench/run.py --smoke --output x.md    # a few seconds; CI keeps it working

Measures, on a database of its own (dropped and recreated, dropped again at the end):

* P1 - pgbench, one single-row INSERT per transaction, without capture ("none") and with the
  connector's capture trigger installed ("capture"), daemon stopped: the trigger's cost.
* P2 - one ``INSERT ... SELECT FROM generate_series`` statement, none vs capture.
* Latency - the daemon running in-process, publishing to Redis pub/sub; the time from the
  writer's ``clock_timestamp()`` (stored in the row) to a Redis subscriber receiving the change,
  idle (one change every 50 ms) and at a steady 100 changes/s. Reference: the writer publishing
  the row to Redis itself right after COMMIT (no durability, the floor of the hop).

Progress goes to stderr, the results table to stdout and to a Markdown file. Missing a target
never fails: the exit code is non-zero only when the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg
import orjson
import redis
import redis.asyncio as aioredis

import connector
from connector import Connector, logs
from connector.config import Config
from connector.install import install, uninstall

BENCH_DIR = Path(__file__).resolve().parent
SCHEMA = "pgconnector"
TABLE = "events_test"
CREATE_TABLE = f"""CREATE TABLE {TABLE} (
    id bigserial PRIMARY KEY, name text, payload jsonb, updated_at timestamptz)"""

# A realistic application payload: 264 bytes of compact JSON text (see PAYLOAD_BYTES).
PAYLOAD = orjson.dumps({
    "user_id": 48151623, "action": "profile.update", "source": "web", "ip": "203.0.113.42",
    "tags": ["alpha", "beta", "gamma"],
    "attributes": {"plan": "pro", "country": "GB", "locale": "en-GB", "theme": "dark"},
    "session": "6f1c2a9e-5b7d-4e3a-9c21-0d8f7b6a5e4c",
    "note": "bench payload row",
}).decode()
PAYLOAD_BYTES = len(PAYLOAD.encode())

PAYLOAD_LITERAL = "'" + PAYLOAD.replace("'", "''") + "'"

PGBENCH_SCRIPT = (
    "\\set uid random(1, 1000000)\n"
    f"INSERT INTO {TABLE} (name, payload, updated_at) "
    f"VALUES ('user-' || :uid, {PAYLOAD_LITERAL}::jsonb, now());\n")
BULK_INSERT = f"""INSERT INTO {TABLE} (name, payload, updated_at)
SELECT 'user-' || g, $1::jsonb, now() FROM generate_series(1, $2) AS g"""
# One change, stamped with the writer's clock inside its own transaction (before COMMIT).
INSERT_ONE = f"""INSERT INTO {TABLE} (name, payload, updated_at)
VALUES ($1, $2::jsonb, clock_timestamp()) RETURNING updated_at"""

P1_TARGET = 0.85  # capture/none at 8 clients
IDLE_P50_TARGET_MS = 50.0
WARMUP_CHANGES = 5  # latency: first changes of each phase, not counted
QUIET = 0.25  # machine CPU use (all cores) below which the box counts as idle before a run
# The wake-up in the capture function: ``IF <cond> THEN PERFORM pg_notify(...); END IF;`` or a
# bare ``PERFORM pg_notify(...);``. Removed only for the P1 diagnostic variant.
WAKEUP_BLOCK = re.compile(
    r"IF\s[^;]*?\sTHEN\s+PERFORM\s+(?:pg_catalog\.)?pg_notify\([^;]*\);\s*END\s+IF;"
    r"|PERFORM\s+(?:pg_catalog\.)?pg_notify\([^;]*\);", re.IGNORECASE)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    smoke: bool
    clients: tuple[int, ...]
    seconds: int  # pgbench -T
    rounds: int  # P1 none/capture pairs per client count
    warmup_seconds: int
    bulk_rows: int
    bulk_rounds: int
    idle_changes: int
    idle_interval: float
    steady_rate: int
    steady_seconds: float
    quiet_wait: float  # most seconds to wait for other CPU load to pass before a timed run

    @classmethod
    def for_mode(cls, smoke: bool) -> Settings:
        if smoke:
            return cls(smoke=True, clients=(8,), seconds=2, rounds=1, warmup_seconds=0,
                       bulk_rows=10_000, bulk_rounds=1, idle_changes=20, idle_interval=0.05,
                       steady_rate=100, steady_seconds=1.0, quiet_wait=0.0)
        return cls(smoke=False, clients=(1, 4, 8), seconds=10, rounds=3, warmup_seconds=3,
                   bulk_rows=100_000, bulk_rounds=3, idle_changes=200, idle_interval=0.05,
                   steady_rate=100, steady_seconds=10.0, quiet_wait=60.0)


def admin_url() -> str:
    """DATABASE_URL, else a URL from the PG* variables (default postgres@127.0.0.1:5432)."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    user = os.environ.get("PGUSER", "postgres")
    password = os.environ.get("PGPASSWORD")
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    db = os.environ.get("PGDATABASE", "postgres")
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    if host.startswith("/"):
        return f"postgresql://{auth}@/{db}?host={quote(host)}&port={port}"
    return f"postgresql://{auth}@{host}:{port}/{db}"


def with_database(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(dbname)))


def without_password(url: str) -> tuple[str, str | None]:
    """The URL minus its password (so it never shows in ``ps``), and the password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{hostinfo}")), unquote(parts.password)


def connector_config(dsn: str, redis_url: str, channel: str,
                     where: dict[str, Any] | None = None) -> Config:
    route: dict[str, Any] = {"table": f"public.{TABLE}", "publisher": "redis",
                             "channel": channel}
    if where is not None:
        route["where"] = where
    return Config.from_dict({
        "postgres": {"dsn": dsn, "schema": SCHEMA, "application_name": "pgconnector-bench"},
        "publishers": {"redis": {"type": "redis", "url": redis_url, "mode": "pubsub"}},
        "routes": [route],
    })


# P1 pushdown: a route whose filter no pgbench row matches (names are 'user-<n>'), so the
# trigger's WHEN clause turns every write away before the capture function runs.
FILTER_NONE_MATCH = {"name": "vip"}


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def fmt_num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


# --------------------------------------------------------------------------- the report


@dataclass
class Row:
    measure: str
    value: str
    reference: str
    ratio: str
    target: str


@dataclass
class Report:
    settings: Settings
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    header_printed: bool = False

    def add(self, row: Row) -> None:
        if not self.header_printed:
            print("| measure | pgconnector | reference (same run) | ratio | target |", flush=True)
            print("|---|---:|---:|---:|---|", flush=True)
            self.header_printed = True
        self.rows.append(row)
        print(f"| {row.measure} | {row.value} | {row.reference} | {row.ratio} | {row.target} |",
              flush=True)

    def write(self, out: TextIO) -> None:
        s = self.settings
        mode = "--smoke: a CI check, figures not meaningful" if s.smoke else "full run"
        out.write("# pgconnector benchmark results\n\n")
        out.write(f"Generated by `bench/run.py` ({mode}) on "
                  f"{self.started.strftime('%Y-%m-%d %H:%M UTC')}.\n\n")
        out.write("## Machine\n\n")
        for key, value in self.machine.items():
            out.write(f"- {key}: {value}\n")
        out.write("\n## Results\n\n")
        out.write("| measure | pgconnector | reference (same run) | ratio | target |\n")
        out.write("|---|---:|---:|---:|---|\n")
        for r in self.rows:
            out.write(f"| {r.measure} | {r.value} | {r.reference} | {r.ratio} | {r.target} |\n")
        if self.skipped:
            out.write("\nNot measured in this run:\n\n")
            out.write("".join(f"- {line}\n" for line in self.skipped))
        if self.warnings:
            out.write("\n**Other work was running on the machine**, so these runs are suspect:\n\n")
            out.write("".join(f"- {line}\n" for line in self.warnings))
        out.write("\n## Method\n\n")
        out.write(method_notes(s))
        if self.details:
            out.write("\n## Individual runs\n\n")
            out.write("".join(f"- {line}\n" for line in self.details))


def method_notes(s: Settings) -> str:
    clients = "/".join(map(str, s.clients))
    return f"""\
- Database `pgconnector_bench`, created for the run and dropped after it; table
  `{TABLE}(id bigserial primary key, name text, payload jsonb, updated_at timestamptz)`,
  every row carrying the same {PAYLOAD_BYTES}-byte JSON payload. "capture" = the connector's
  objects installed with `connector.install.install` (row trigger for insert/update/delete,
  statement trigger for truncate, outbox in schema `{SCHEMA}`); "none" = not installed
  (`uninstall` between runs). Reference column = "none" for P1/P2.
- **P1**: `pgbench -n -M prepared -T {s.seconds}` at {clients} client(s) (`-j` = min(clients,
  CPUs)), one single-row `INSERT` per transaction, daemon not running, so this is the cost of the
  trigger alone. Before every run: `TRUNCATE` of the table and the outbox, then `CHECKPOINT`.
  The variants alternate, their order rotating each round; {s.rounds} round(s), median tps
  reported{f", after a {s.warmup_seconds} s warm-up run that is discarded" if s.warmup_seconds
  else ""}. Default server settings (fsync and synchronous_commit on).
  Pushdown row (at {max(s.clients)} clients): the route filtered with `where: {{name: vip}}`,
  which no written row matches, so the triggers' `WHEN` clause turns every write away (the
  run checks the outbox stayed empty): what writes nobody listens to cost.
  Diagnostic row (at {max(s.clients)} clients): the same capture with the `pg_notify` wake-up
  removed from the capture function in the bench database, to show what the wake-up costs.
- **P2**: wall time of one `INSERT ... SELECT ... FROM generate_series(1, {s.bulk_rows:,})`
  (one statement, autocommit, COMMIT included), none vs capture alternating, median of
  {s.bulk_rounds}; `TRUNCATE` + `CHECKPOINT` before each.
- **Latency**: the daemon runs in this process (`Connector(config).start()`, default `capture`
  settings), publishing with Redis `PUBLISH`; a redis.asyncio subscriber in the same process
  notes `time.time()` on receipt. Each change is one autocommit `INSERT` whose `updated_at` is
  `clock_timestamp()`, taken inside the writer's transaction before COMMIT; latency = receipt
  time - that timestamp, so it includes the writer's own COMMIT (WAL flush). Idle: one change
  every {s.idle_interval * 1000:.0f} ms, {s.idle_changes} changes; steady: {s.steady_rate}
  changes/s for {s.steady_seconds:g} s. The first {WARMUP_CHANGES} changes of each phase are
  not counted. Reference = the writer `PUBLISH`ing the row itself right after its COMMIT
  returns (capture not installed): the floor of the Redis hop, with none of the durability.
- Writer, PostgreSQL, daemon, subscriber and Redis share the machine's CPUs over loopback;
  run-to-run spread on a 2-core box is ±10-20 % or more (BASELINE.md; see the individual runs
  below), so read ratios, not absolutes.
"""


# --------------------------------------------------------------------------- database


class Bench:
    """The bench database, the capture switch and the reset done before every run."""

    def __init__(self, admin: str, dbname: str) -> None:
        self.admin = admin
        self.dbname = dbname
        self.url = with_database(admin, dbname)
        self.conn: asyncpg.Connection | None = None
        self.config: Config | None = None
        self.filtered_config: Config | None = None
        self.filtered = False
        self.captured = False
        self.wakeup = True  # the capture function sends its wake-up NOTIFY

    @property
    def db(self) -> asyncpg.Connection:
        assert self.conn is not None, "bench database not open"
        return self.conn

    async def create(self) -> None:
        admin = await asyncpg.connect(self.admin)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(self.dbname)} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {quote_ident(self.dbname)}")
        finally:
            await admin.close()
        self.conn = await asyncpg.connect(self.url)
        await self.db.execute(CREATE_TABLE)

    async def set_capture(self, on: bool, *, wakeup: bool = True,
                          filtered: bool = False) -> None:
        """Install (``on``) or uninstall capture; ``wakeup=False`` installs it and then removes
        the wake-up NOTIFY from the capture function (a diagnostic, see strip_wakeup);
        ``filtered`` installs the route filtered to rows no write matches (pushdown)."""
        assert self.config is not None and self.filtered_config is not None
        if on:
            # install is idempotent and re-creates the capture function, so this also undoes
            # an earlier strip_wakeup.
            if not self.captured or not self.wakeup or self.filtered != filtered:
                await install(self.db, self.filtered_config if filtered else self.config)
            self.captured, self.wakeup, self.filtered = True, True, filtered
            if not wakeup:
                self.wakeup = not await self.strip_wakeup()
        elif self.captured:
            await uninstall(self.db, SCHEMA, force=True)
            self.captured, self.wakeup = False, True

    async def strip_wakeup(self) -> bool:
        """Re-create the installed capture function(s) without their ``pg_notify`` call
        (this database only); False when there was none to remove."""
        functions = await self.db.fetch(
            "SELECT pg_get_functiondef(p.oid) AS def FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = $1 AND p.prosrc LIKE '%pg_notify%'", SCHEMA)
        stripped = False
        for row in functions:
            new = WAKEUP_BLOCK.sub("", row["def"])
            if new != row["def"] and "pg_notify" not in new:
                await self.db.execute(new)
                stripped = True
        return stripped

    async def reset(self) -> None:
        """Empty table and outbox and checkpoint, so every run starts from the same state."""
        await self.db.execute(f"TRUNCATE {TABLE} RESTART IDENTITY")
        if self.captured:  # after the table: its truncate trigger writes to the outbox
            await self.db.execute(f"TRUNCATE {quote_ident(SCHEMA)}.outbox")
        await self.db.execute("CHECKPOINT")

    async def drop(self) -> None:
        """Uninstall the connector's objects, then drop the database."""
        if self.conn is not None and not self.conn.is_closed():
            with contextlib.suppress(Exception):
                await uninstall(self.conn, SCHEMA, force=True)
            await self.conn.close()
        admin = await asyncpg.connect(self.admin)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(self.dbname)} WITH (FORCE)")
        finally:
            await admin.close()


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


async def machine_info(conn: asyncpg.Connection, redis_url: str) -> dict[str, str]:
    info = {"CPUs (nproc)": f"{os.cpu_count()} ({cpu_model()})"}
    version = await conn.fetchval("SELECT version()")
    info["PostgreSQL"] = str(version).split(" on ")[0]
    settings = await conn.fetch(
        "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[]) ORDER BY name",
        ["fsync", "synchronous_commit", "wal_level", "shared_buffers", "max_wal_size"])
    info["PostgreSQL settings"] = ", ".join(
        f"{r['name']}={r['setting']}{r['unit'] or ''}" for r in settings)
    try:
        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=3)
        try:
            server = await client.info("server")
            info["Redis"] = str(server.get("redis_version", "?"))
        finally:
            await client.aclose()
    except (redis.RedisError, OSError):
        info["Redis"] = "unreachable"
    info["Python"] = (f"{platform.python_version()}, asyncpg {asyncpg.__version__}, "
                      f"redis-py {redis.__version__}")
    info["pgconnector"] = f"{connector.__version__} ({await git_describe()})"
    with contextlib.suppress(OSError):
        load = os.getloadavg()
        info["load average at start"] = ", ".join(f"{x:.2f}" for x in load)
    return info


async def git_describe() -> str:
    """The commit measured; "-dirty" when the code under test (not bench/) has local edits."""

    async def git(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "git", "-C", str(BENCH_DIR.parent), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
        return out.decode().strip() if proc.returncode == 0 else ""

    try:
        commit = await git("describe", "--always")
        dirty = await git("status", "--porcelain", "--", "connector", "sql", "pyproject.toml")
    except OSError:
        return "commit unknown"
    return (commit + ("-dirty" if dirty else "")) or "commit unknown"


# --------------------------------------------------------------------------- other load


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat; None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


async def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs in use over the next ``seconds``."""
    before = cpu_times()
    await asyncio.sleep(seconds)
    after = cpu_times()
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


async def wait_until_quiet(report: Report, what: str) -> None:
    """Other work on the box (a test suite, a build) skews every figure: before a timed run,
    wait up to ``quiet_wait`` s for it to pass, and flag the run when it does not."""
    deadline = time.monotonic() + report.settings.quiet_wait
    announced = False
    while True:
        busy = await cpu_busy(1.0 if report.settings.quiet_wait else 0.25)
        if busy is None or busy < QUIET:
            return
        if time.monotonic() >= deadline:
            log(f"warning: {busy:.0%} of the CPUs busy with other work before {what}")
            report.warnings.append(f"{what}: {busy:.0%} of the CPUs were busy with other work "
                                   "just before it started")
            return
        if not announced:
            log(f"{busy:.0%} of the CPUs busy with other work; waiting up to "
                f"{report.settings.quiet_wait:.0f} s before {what}")
            announced = True


# --------------------------------------------------------------------------- P1: pgbench


class Pgbench:
    def __init__(self, binary: str, url: str, script: Path) -> None:
        self.binary = binary
        self.url, password = without_password(url)
        self.env = dict(os.environ)
        if password is not None:
            self.env["PGPASSWORD"] = password
        self.script = script

    async def tps(self, clients: int, seconds: int) -> float:
        jobs = max(1, min(clients, os.cpu_count() or 1))
        cmd = [self.binary, "-n", "-M", "prepared", "-f", str(self.script),
               "-c", str(clients), "-j", str(jobs), "-T", str(seconds), self.url]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env)
        out, err = await proc.communicate()
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench exited with {proc.returncode}: "
                               f"{err.decode(errors='replace').strip()[-800:]}")
        match = re.search(r"^tps = ([0-9.]+) \((?:without|excluding)", text, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no tps in pgbench output:\n{text}")
        return float(match.group(1))


NO_WAKEUP = "capture-no-wakeup"  # diagnostic: capture with the trigger's NOTIFY removed
FILTERED = "capture-filtered-out"  # pushdown: a route whose filter no write matches
P1_FILTERED_TARGET = 0.95  # filtered-out writes cost at most 5 % (issue 4)


async def prepare_variant(bench: Bench, report: Report, variant: str, what: str) -> None:
    await bench.set_capture(variant != "none", wakeup=variant != NO_WAKEUP,
                            filtered=variant == FILTERED)
    await bench.reset()
    await wait_until_quiet(report, what)


async def run_p1(bench: Bench, report: Report, pgbench: Pgbench) -> None:
    s = report.settings
    top = max(s.clients)
    # Does the capture function send a wake-up NOTIFY that the diagnostic can remove?
    await bench.set_capture(True, wakeup=False)
    diagnose = not bench.wakeup
    if s.warmup_seconds:
        await prepare_variant(bench, report, "none", "the warm-up")
        log(f"P1 warm-up: {s.warmup_seconds} s at {top} clients, discarded")
        await pgbench.tps(top, s.warmup_seconds)
    for clients in s.clients:
        variants = ["none", "capture"] + ([FILTERED] if clients == top else []) + (
            [NO_WAKEUP] if diagnose and clients == top else [])
        runs: dict[str, list[float]] = {v: [] for v in variants}
        for rnd in range(s.rounds):
            # Alternate, and rotate the order each round so drift does not favour one variant.
            shift = rnd % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                await prepare_variant(bench, report, variant,
                                      f"P1 {clients} client(s) {variant} round {rnd + 1}")
                tps = await pgbench.tps(clients, s.seconds)
                if variant != "none":
                    await check_outbox(bench, tps * s.seconds, filtered=variant == FILTERED)
                runs[variant].append(tps)
                log(f"P1 {clients} client(s), round {rnd + 1}/{s.rounds}, {variant}: "
                    f"{tps:,.0f} tps")
        median = {v: statistics.median(r) for v, r in runs.items()}
        r = median["capture"] / median["none"]
        label = "client" if clients == 1 else "clients"
        target = "—"
        if clients == 8:
            target = f"≥ {P1_TARGET} ({'met' if r >= P1_TARGET else 'missed'})"
        report.add(Row(f"P1 single-row INSERT, {clients} {label} (tps, median)",
                       fmt_num(median["capture"]), fmt_num(median["none"]), fmt_ratio(r),
                       target))
        if FILTERED in median:
            rf = median[FILTERED] / median["none"]
            report.add(Row(f"P1 pushdown, {clients} {label}: capture installed, route filtered "
                           "to rows these writes never match (tps)", fmt_num(median[FILTERED]),
                           fmt_num(median["none"]), fmt_ratio(rf),
                           f"≥ {P1_FILTERED_TARGET} ("
                           f"{'met' if rf >= P1_FILTERED_TARGET else 'missed'})"))
        if NO_WAKEUP in median:
            report.add(Row(f"P1 diagnostic, {clients} {label}: capture with the trigger's "
                           "wake-up NOTIFY removed (tps)", fmt_num(median[NO_WAKEUP]),
                           fmt_num(median["none"]), fmt_ratio(median[NO_WAKEUP] / median["none"]),
                           "diagnostic only"))
        report.details.append(f"P1 {clients} {label}: " + "; ".join(
            f"{variant} " + ", ".join(fmt_num(x) for x in values) + " tps"
            for variant, values in runs.items()))
    if not diagnose:
        report.skipped.append("P1 diagnostic: the capture function sends no NOTIFY to remove")


async def check_outbox(bench: Bench, expected_about: float, filtered: bool = False) -> None:
    """Sanity: capture really wrote one outbox row per inserted row (none when filtered)."""
    rows = await bench.db.fetchval(f"SELECT count(*) FROM {TABLE}")
    outbox = await bench.db.fetchval(f"SELECT count(*) FROM {quote_ident(SCHEMA)}.outbox")
    if filtered and outbox:
        raise RuntimeError(f"filtered run: {outbox} outbox rows, expected none")
    if not filtered and rows != outbox:
        raise RuntimeError(f"capture run: {rows} rows inserted but {outbox} in the outbox")
    if rows < 0.5 * expected_about:
        log(f"note: {rows} rows inserted, pgbench reported about {expected_about:.0f}")


# --------------------------------------------------------------------------- P2: bulk insert


async def run_p2(bench: Bench, report: Report) -> None:
    s = report.settings
    runs: dict[str, list[float]] = {"none": [], "capture": []}
    for rnd in range(s.bulk_rounds):
        order = ("none", "capture") if rnd % 2 == 0 else ("capture", "none")
        for variant in order:
            await prepare_variant(bench, report, variant, f"P2 {variant} round {rnd + 1}")
            started = time.perf_counter()
            await bench.db.execute(BULK_INSERT, PAYLOAD, s.bulk_rows)
            ms = (time.perf_counter() - started) * 1000
            if variant == "capture":
                await check_outbox(bench, s.bulk_rows)
            runs[variant].append(ms)
            log(f"P2 {s.bulk_rows:,} rows, round {rnd + 1}/{s.bulk_rounds}, {variant}: "
                f"{ms:,.0f} ms")
    none, capture = statistics.median(runs["none"]), statistics.median(runs["capture"])
    report.add(Row(f"P2 one INSERT…SELECT of {s.bulk_rows:,} rows (ms, median)",
                   fmt_num(capture), fmt_num(none), fmt_ratio(capture / none) + "x",
                   "reported"))
    report.details.append(
        f"P2 {s.bulk_rows:,} rows: none " + ", ".join(fmt_num(x) for x in runs["none"])
        + " ms; capture " + ", ".join(fmt_num(x) for x in runs["capture"]) + " ms")


# --------------------------------------------------------------------------- latency


class Subscriber:
    """A Redis pub/sub subscriber that notes the wall time each message arrives."""

    def __init__(self, url: str, channel: str) -> None:
        self.client: aioredis.Redis = aioredis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.channel = channel
        self.received: list[tuple[float, bytes]] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        await self.pubsub.subscribe(self.channel)
        # Wait for the server's confirmation, so nothing published after this is missed.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = await self.pubsub.get_message(timeout=1)
            if msg is not None and msg["type"] == "subscribe":
                break
        else:
            raise RuntimeError("redis did not confirm the subscription")
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for msg in self.pubsub.listen():
            if msg["type"] == "message":
                self.received.append((time.time(), msg["data"]))
                self._arrived.set()

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), deadline - time.monotonic())

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.client.aclose()


@dataclass
class Latency:
    label: str
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


AfterCommit = Callable[[str, dt.datetime], Awaitable[None]]


async def paced_writes(conn: asyncpg.Connection, prefix: str, count: int, interval: float,
                       after_commit: AfterCommit | None = None) -> float:
    """``count`` single-row autocommit INSERTs, one every ``interval`` s; returns the rate."""
    started = time.perf_counter()
    for i in range(count):
        delay = started + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        updated_at = await conn.fetchval(INSERT_ONE, f"{prefix}-{i}", PAYLOAD)
        if after_commit is not None:
            await after_commit(f"{prefix}-{i}", updated_at)
    elapsed = time.perf_counter() - started
    return count / elapsed if elapsed > 0 else 0.0


async def measure(label: str, conn: asyncpg.Connection, sub: Subscriber, prefix: str,
                  count: int, interval: float, after_commit: AfterCommit | None = None
                  ) -> Latency:
    """Write ``count`` paced changes (after a short unmeasured warm-up) and collect latencies."""
    sub.received.clear()
    await paced_writes(conn, f"warmup-{prefix}", WARMUP_CHANGES, interval, after_commit)
    await sub.wait_for(WARMUP_CHANGES, timeout=10)
    sub.received.clear()
    rate = await paced_writes(conn, prefix, count, interval, after_commit)
    await sub.wait_for(count, timeout=15)
    samples = []
    for received_at, data in sub.received:
        row = orjson.loads(data).get("new")
        if not isinstance(row, dict) or not str(row.get("name", "")).startswith(prefix + "-"):
            continue
        written = dt.datetime.fromisoformat(row["updated_at"]).timestamp()
        samples.append((received_at - written) * 1000)
    result = Latency(label, samples, count, rate)
    log(f"latency {label}: {len(samples)}/{count} received at {rate:.0f}/s, "
        f"p50 {fmt_num(result.pct(50), 1)} ms, max {fmt_num(result.max, 1)} ms")
    return result


async def run_latency(bench: Bench, report: Report, redis_url: str) -> None:
    s = report.settings
    assert bench.config is not None
    channel = bench.config.routes[0].channel.source
    steady_count = int(s.steady_rate * s.steady_seconds)
    steady_interval = 1 / s.steady_rate
    publisher = aioredis.Redis.from_url(redis_url)

    async def publish_after_commit(name: str, updated_at: dt.datetime) -> None:
        # The same shape as the connector's event, as far as the subscriber reads it.
        await publisher.publish(channel, orjson.dumps(
            {"new": {"name": name, "updated_at": updated_at.isoformat()}}))

    writer = await asyncpg.connect(bench.url)
    try:
        async with Subscriber(redis_url, channel) as sub:
            await bench.set_capture(False)
            await bench.reset()
            await wait_until_quiet(report, "the latency reference runs")
            ref_idle = await measure("reference idle", writer, sub, "ref-idle", s.idle_changes,
                                     s.idle_interval, publish_after_commit)
            ref_steady = await measure("reference steady", writer, sub, "ref-steady",
                                       steady_count, steady_interval, publish_after_commit)
            await bench.reset()
            log("starting the connector in-process")
            async with running(Connector(bench.config)):
                bench.captured = True  # the connector installed its objects
                await wait_until_quiet(report, "the latency runs")
                idle = await measure("idle", writer, sub, "idle", s.idle_changes,
                                     s.idle_interval)
                steady = await measure("steady", writer, sub, "steady", steady_count,
                                       steady_interval)
    finally:
        await writer.close()
        await publisher.aclose()

    for result, ref, what in (
            (idle, ref_idle, f"idle (1 change / {s.idle_interval * 1000:.0f} ms)"),
            (steady, ref_steady, f"steady {s.steady_rate} changes/s")):
        for name, value, ref_value in (
                ("p50", result.pct(50), ref.pct(50)), ("p95", result.pct(95), ref.pct(95)),
                ("p99", result.pct(99), ref.pct(99)), ("max", result.max, ref.max)):
            target = "—"
            if result is idle and name == "p50":
                met = value is not None and value < IDLE_P50_TARGET_MS
                target = f"well under {IDLE_P50_TARGET_MS:.0f} ms ({'met' if met else 'missed'})"
            report.add(Row(f"Latency {what}, {name} (ms)", fmt_num(value, 1),
                           fmt_num(ref_value, 1), fmt_ratio(ratio(value, ref_value)), target))
        report.details.append(
            f"Latency {what}: {len(result.samples_ms)}/{result.sent} changes received "
            f"(writer achieved {result.rate:.0f}/s); reference {len(ref.samples_ms)}/{ref.sent}")
        if result.lost:
            report.details.append(f"**{result.lost} change(s) not received within 15 s** "
                                  f"in the {what} phase")


@contextlib.asynccontextmanager
async def running(c: Connector) -> AsyncIterator[Connector]:
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


# --------------------------------------------------------------------------- main


async def redis_reachable(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        return bool(await client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def main_async(args: argparse.Namespace) -> int:
    settings = Settings.for_mode(args.smoke)
    if args.clients:
        settings = dataclasses.replace(
            settings, clients=tuple(int(c) for c in args.clients.split(",")))
    report = Report(settings)
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    bench = Bench(admin_url(), args.database)
    channel = f"pgconnector-bench:{uuid.uuid4().hex[:8]}:{TABLE}"

    log(f"creating database {args.database}")
    await bench.create()
    try:
        bench.config = connector_config(bench.url, redis_url, channel)
        bench.filtered_config = connector_config(bench.url, redis_url, channel,
                                                 where=FILTER_NONE_MATCH)
        report.machine = await machine_info(bench.db, redis_url)
        for key, value in report.machine.items():
            log(f"{key}: {value}")

        pgbench_bin = os.environ.get("PGBENCH") or shutil.which("pgbench")
        if pgbench_bin is None:
            report.skipped.append("P1: pgbench not found (set PGBENCH or put it on PATH)")
            log("pgbench not found: P1 skipped")
        else:
            with tempfile.TemporaryDirectory(prefix="pgconnector-bench-") as tmp:
                script = Path(tmp) / "insert.sql"
                script.write_text(PGBENCH_SCRIPT)
                await run_p1(bench, report, Pgbench(pgbench_bin, bench.url, script))

        if args.only_p1:
            report.skipped.append("P2 and latency: not run (--only-p1)")
        else:
            await run_p2(bench, report)
        if args.only_p1:
            pass
        elif await redis_reachable(redis_url):
            await run_latency(bench, report, redis_url)
        else:
            report.skipped.append(f"Latency: Redis not reachable at {redact(redis_url)}")
            log("Redis not reachable: latency skipped")
    finally:
        log(f"cleaning up: uninstalling and dropping {args.database}")
        await bench.drop()

    output = args.output
    if output is None:
        output = (Path(tempfile.gettempdir()) / "pgconnector-bench-smoke.md" if args.smoke
                  else BENCH_DIR / "RESULTS.md")
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as out:
        report.write(out)
    log(f"results written to {output}")
    return 0


def redact(url: str) -> str:
    return without_password(url)[0]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds in all, to check the script works (CI)")
    parser.add_argument("--output", type=Path, default=None,
                        help="Markdown results file (default: bench/RESULTS.md; with --smoke, "
                             "a file in the temp directory so the committed results stay)")
    parser.add_argument("--database", default="pgconnector_bench",
                        help="name of the database to create, use and drop")
    parser.add_argument("--clients", default=None,
                        help="P1 client counts, comma-separated (default 1,4,8)")
    parser.add_argument("--only-p1", action="store_true",
                        help="measure the writers' cost (P1) only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The connector logs through structlog: keep it on stderr, and quiet.
    logs.configure(fmt="console", level="warning")
    started = time.monotonic()
    try:
        code = asyncio.run(main_async(args))
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
