"""The wal source through one very large transaction: the daemon's peak RSS (VmHWM) while
one transaction of ``--rows`` rows (1,000,000 by default) streams to Redis pub/sub, and the
time from its commit to the slot confirmed past it. The stream is read no further ahead than
connector/readers/replication.py's BUFFER messages and published in batches of
capture.batch_size as it arrives; only the commit is acknowledged, so memory is bounded by the
buffer and a batch, not by the transaction (issue 14: RSS ≤ 200 MB).

    .venv/bin/python -m bench.wal_bigtx [--rows N]

Prints a results table; figures go to bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.cluster import PostgresCluster
from bench.processes import Daemon
from connector.config import from_dict
from connector.store.install import install

TARGET_MB = 200.0


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


async def run(rows: int, redis_url: str) -> None:
    cluster = PostgresCluster("wal_level=logical", "max_wal_size=4GB").init()
    cluster.start()
    try:
        admin = await asyncpg.connect(cluster.admin_url)
        await admin.execute("CREATE DATABASE bigtx")
        await admin.close()
        dsn = cluster.url("bigtx")
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE big (id bigint PRIMARY KEY, name text, payload jsonb)")
        config = {
            "postgres": {"dsn": dsn},
            "capture": {"source": "wal"},
            "publishers": {"redis": {"type": "redis", "url": redis_url}},
            "routes": [{"table": "big", "publisher": "redis", "channel": "bench:bigtx"}],
            "logging": {"level": "info", "format": "json"},
        }
        await install(conn, from_dict(config))
        with tempfile.TemporaryDirectory() as tmp:
            daemon = await Daemon(Path(tmp), "bigtx", config).start()
            try:
                before = peak_rss_kb(daemon.pid)
                started = time.monotonic()
                await conn.execute(
                    "INSERT INTO big SELECT g, 'name ' || g, "
                    "'{\"a\": 1, \"b\": [1, 2, 3], \"c\": \"some text here\"}' "
                    "FROM generate_series(1, $1) g", rows)
                committed = time.monotonic()
                # After the commit: at or past its end (the slot may be confirmed inside the
                # transaction before - keepalive positions - but past it only once delivered).
                end = await conn.fetchval(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')")
                while await conn.fetchval(
                        "SELECT pg_wal_lsn_diff(confirmed_flush_lsn, '0/0') "
                        "FROM pg_replication_slots") < end:
                    assert daemon.running, daemon.log_tail()
                    await asyncio.sleep(0.2)
                done = time.monotonic()
                peak = peak_rss_kb(daemon.pid)
            finally:
                await daemon.stop()
        await conn.close()
    finally:
        cluster.remove()
    print("| measure | value | target |")
    print("|---|---:|---|")
    print(f"| rows in the one transaction | {rows:,} | 1,000,000 |")
    print(f"| daemon RSS before | {before / 1024:.0f} MB | |")
    verdict = "met" if peak / 1024 <= TARGET_MB else "missed"
    print(f"| daemon peak RSS (VmHWM) through it | {peak / 1024:.0f} MB | "
          f"≤ {TARGET_MB:.0f} MB ({verdict}) |")
    print(f"| insert + commit | {committed - started:.1f} s | |")
    print(f"| commit → slot confirmed past it | {done - committed:.1f} s "
          f"({rows / (done - committed):,.0f} rows/s after the commit) | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.redis))


if __name__ == "__main__":
    main()
