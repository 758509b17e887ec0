"""The machine the run is on, and waiting for other work on it to pass before a timed run."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import platform
import time
from pathlib import Path

import asyncpg
import redis
import redis.asyncio as aioredis

import connector
from bench.common import REPO_ROOT, log, machine_cpu_times
from bench.report import Report

QUIET = 0.25  # machine CPU use (all cores) below which the box counts as idle before a run


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_total() -> str:
    with contextlib.suppress(OSError, ValueError, StopIteration):
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
        return f"{kb / 1024 / 1024:.1f} GiB"
    return "unknown"


async def machine_info(conn: asyncpg.Connection, redis_url: str) -> dict[str, str]:
    info = {"CPUs (nproc)": f"{os.cpu_count()} ({cpu_model()})", "memory": memory_total()}
    version = await conn.fetchval("SELECT version()")
    info["PostgreSQL"] = str(version).split(" on ")[0]
    settings = await conn.fetch(
        "SELECT name, current_setting(name) AS setting FROM pg_settings "
        "WHERE name = ANY($1::text[]) ORDER BY name",
        ["fsync", "synchronous_commit", "wal_level", "shared_buffers", "max_wal_size",
         "track_commit_timestamp", "shared_preload_libraries"])
    info["PostgreSQL settings"] = ", ".join(
        f"{r['name']}={r['setting']}" for r in settings)
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
            "git", "-C", str(REPO_ROOT), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
        return out.decode().strip() if proc.returncode == 0 else ""

    try:
        commit = await git("describe", "--always")
        dirty = await git("status", "--porcelain", "--", "connector", "sql", "pyproject.toml")
    except OSError:
        return "commit unknown"
    return (commit + ("-dirty" if dirty else "")) or "commit unknown"


def code_fingerprint() -> str:
    """A digest of the code under test (connector/ and sql/ as they are on disk), to notice
    when it changes during a run (someone else editing or committing in this checkout)."""
    digest = hashlib.sha256()
    for folder in ("connector", "sql"):
        for path in sorted((REPO_ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".sql") and path.is_file():
                digest.update(str(path.relative_to(REPO_ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


async def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs in use over the next ``seconds``."""
    before = machine_cpu_times()
    await asyncio.sleep(seconds)
    after = machine_cpu_times()
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


async def wait_until_quiet(report: Report, what: str) -> None:
    """Other work on the box (a test suite, a build) skews every figure: before a timed run,
    wait up to ``quiet_wait`` s (and ``quiet_budget`` s over the whole run) for it to pass,
    and flag the run when it does not. Smoke runs do not wait."""
    s = report.settings
    if s.quiet_wait <= 0:
        return
    started = time.monotonic()
    deadline = started + min(s.quiet_wait, max(0.0, s.quiet_budget - report.quiet_waited))
    announced = False
    try:
        while True:
            busy = await cpu_busy(1.0)
            if busy is None or busy < QUIET:
                return
            if time.monotonic() >= deadline:
                log(f"warning: {busy:.0%} of the CPUs busy with other work before {what}")
                report.warnings.append(f"{what}: {busy:.0%} of the CPUs were busy with other "
                                       "work just before it started")
                return
            if not announced:
                log(f"{busy:.0%} of the CPUs busy with other work; waiting up to "
                    f"{deadline - time.monotonic():.0f} s before {what}")
                announced = True
    finally:
        report.quiet_waited += max(0.0, time.monotonic() - started - 1.0)
