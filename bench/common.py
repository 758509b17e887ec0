"""What every measurement shares: the table and payload, the run's settings, progress lines,
connection URLs, statistics and number formatting, and what /proc tells about a process."""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import orjson

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SCHEMA = "pgconnector"
TABLE = "events_test"
APP_NAME = "pgconnector-bench"  # the daemon's application_name in pg_stat_activity
CREATE_TABLE = f"""CREATE TABLE {TABLE} (
    id bigserial PRIMARY KEY, name text, payload jsonb, updated_at timestamptz)"""
# P1 DELETE: each transaction deletes the next row of the pre-filled table (see p1_writers).
DELETE_SEQUENCE = "bench_delete_next"

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

# Rows written by one statement (P2, the P3 backlog, the pre-filled tables of P1).
BULK_INSERT = f"""INSERT INTO {TABLE} (name, payload, updated_at)
SELECT 'user-' || g, $1::jsonb, now() FROM generate_series($2::bigint, $3::bigint) AS g"""
BULK_UPDATE = f"UPDATE {TABLE} SET name = name || '-u', updated_at = now()"
# One change, stamped with the writer's clock inside its own transaction (before COMMIT).
INSERT_ONE = f"""INSERT INTO {TABLE} (name, payload, updated_at)
VALUES ($1, $2::jsonb, clock_timestamp()) RETURNING updated_at"""

MEASURES = ("P1", "P2", "P3", "P4", "P5", "idle", "H", "L", "O", "WAL")  # H, L, O; wal.py


def log(message: str) -> None:
    """A progress line on stderr, with the time of day."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    smoke: bool
    clients: tuple[int, ...]
    seconds: int  # pgbench -T of each P1 run
    rounds: int  # P1 runs of each variant
    warmup_seconds: int
    update_rows: int  # P1 UPDATE: rows picked at random from a table of this many
    delete_rows: int  # P1 DELETE: first size of the pre-filled table (doubles if exhausted)
    bulk_rows: int
    bulk_rounds: int
    drain_events: int  # P3 backlog
    operator_changes: int  # O backlog
    sustained_rates: tuple[int, ...]  # P3 sustained: changes/s the writers aim for, in steps
    sustained_seconds: int
    idle_changes: int  # P4 "idle": that many changes, one every idle_interval
    idle_interval: float
    latency_rates: tuple[int, ...]  # P4 steady rates, changes/s
    latency_seconds: float  # per steady rate (at most latency_max_changes changes)
    latency_max_changes: int
    outage_seconds: float  # P5
    outage_rate: int  # changes/s written through the outage
    idle_seconds: float  # idle cost: the measuring window
    settle_seconds: float  # after the daemon is active, before a window starts
    quiet_wait: float  # most seconds to wait for other CPU load before one timed run
    quiet_budget: float  # most seconds of such waiting in the whole run

    @classmethod
    def for_mode(cls, smoke: bool) -> Settings:
        if smoke:
            return cls(smoke=True, clients=(8,), seconds=1, rounds=1, warmup_seconds=0,
                       update_rows=10_000, delete_rows=30_000, bulk_rows=10_000,
                       bulk_rounds=1, drain_events=20_000, operator_changes=2_000,
                       sustained_rates=(2_000, 4_000),
                       sustained_seconds=1, idle_changes=20, idle_interval=0.05,
                       latency_rates=(100, 1_000, 10_000), latency_seconds=0.5,
                       latency_max_changes=2_000, outage_seconds=5.0, outage_rate=200,
                       idle_seconds=2.0, settle_seconds=0.5, quiet_wait=0.0, quiet_budget=0.0)
        return cls(smoke=False, clients=(1, 4, 8), seconds=10, rounds=3, warmup_seconds=3,
                   update_rows=100_000, delete_rows=300_000, bulk_rows=100_000, bulk_rounds=3,
                   drain_events=1_000_000, operator_changes=100_000,
                   sustained_rates=(10_000, 20_000, 30_000, 40_000, 60_000),
                   sustained_seconds=10,
                   idle_changes=200, idle_interval=0.05, latency_rates=(100, 1_000, 10_000),
                   latency_seconds=10.0, latency_max_changes=60_000, outage_seconds=60.0,
                   outage_rate=500, idle_seconds=30.0, settle_seconds=5.0, quiet_wait=60.0,
                   quiet_budget=900.0)


def parse_only(text: str | None) -> tuple[str, ...]:
    """``--only P1,p3,idle`` → ("P1", "P3", "idle"); None → every measure."""
    if not text:
        return MEASURES
    chosen = []
    for part in text.split(","):
        name = part.strip()
        if not name:
            continue
        match = [m for m in MEASURES if m.lower() == name.lower()]
        if not match:
            raise ValueError(f"unknown measure {name!r} (choose from {', '.join(MEASURES)})")
        if match[0] not in chosen:
            chosen.append(match[0])
    return tuple(m for m in MEASURES if m in chosen)


# --------------------------------------------------------------------------- URLs


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


def redact(url: str) -> str:
    return without_password(url)[0]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of nothing")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct * len(ordered) / 100)))
    return ordered[rank - 1]


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt_num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def fmt_ratio(value: float | None, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.2f}{suffix}"


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "missed")


def at_least(value: float | None, target: float, text: str) -> str:
    """Target cell for "value must be ≥ target": ``text (met)``."""
    return f"{text} ({verdict(None if value is None else value >= target)})"


def at_most(value: float | None, target: float, text: str) -> str:
    """Target cell for "value must be ≤ target": ``text (missed)``."""
    return f"{text} ({verdict(None if value is None else value <= target)})"


def rates_per_second(samples: Sequence[tuple[float, float]],
                     bucket: float = 1.0) -> list[tuple[float, float]]:
    """Cumulative ``(seconds, count)`` samples → ``(bucket start, count per second)`` for each
    ``bucket``-long interval, the count at a bucket edge interpolated between samples."""
    if len(samples) < 2:
        return []
    points = sorted(samples)
    start, end = points[0][0], points[-1][0]

    def count_at(t: float) -> float:
        for (t0, c0), (t1, c1) in itertools.pairwise(points):
            if t0 <= t <= t1:
                return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)
        return points[-1][1]

    out = []
    edge = start
    while edge < end - 1e-9:
        upper = min(edge + bucket, end)
        out.append((edge - start, (count_at(upper) - count_at(edge)) / (upper - edge)))
        edge += bucket
    return out


def is_flat(start_kb: float, max_kb: float, slack_kb: float = 10 * 1024) -> bool:
    """RSS "flat": it never rose more than ``slack_kb`` above where it started."""
    return max_kb - start_kb <= slack_kb


# --------------------------------------------------------------------------- processes


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def rss_kb(pid: int) -> int | None:
    """The process's resident set (VmRSS of /proc/<pid>/status), kB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def parse_proc_stat(text: str) -> float:
    """utime + stime, in seconds, from the text of /proc/<pid>/stat."""
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat


def cpu_seconds(pid: int) -> float | None:
    """CPU time the process has used (user + system), seconds; None once it is gone."""
    try:
        return parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError, ValueError):
        return None


def cpu_total(pids: Sequence[int]) -> float:
    """CPU seconds used by these processes together (those gone count 0)."""
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


def machine_cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat; None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)
