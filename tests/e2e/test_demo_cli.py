"""The README's first quick-start command: `pgconnector demo` runs end to end and cleans up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

PGCONNECTOR = Path(sys.executable).parent / "pgconnector"


async def test_demo_streams_every_change_and_cleans_up(database: str, redis_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database, "REDIS_URL": redis_url}
    proc = subprocess.run([str(PGCONNECTOR), "demo", "--changes", "3"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line)["event"] for line in proc.stdout.splitlines()]
    assert [e["op"] for e in events] == ["insert"] * 3 + ["update", "delete", "truncate"]
    assert events[3]["changes"]["plan"] == {"old": "free", "new": "pro"}
    assert "6 changes made, 6 delivered, 6 received by a Redis subscriber" in proc.stderr
    conn = await asyncpg.connect(database)
    try:
        left = await conn.fetchval("SELECT count(*) FROM pg_namespace "
                                   "WHERE nspname LIKE 'pgconnector_demo%'")
    finally:
        await conn.close()
    assert left == 0


@pytest.mark.timeout(180)  # initdb and a server start, in a subprocess given 120 s
def test_demo_starts_a_throwaway_postgres_when_none_answers(redis_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres",
           "REDIS_URL": redis_url}
    proc = subprocess.run([str(PGCONNECTOR), "demo", "--changes", "2"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "starting a throwaway PostgreSQL" in proc.stderr
    assert len(proc.stdout.splitlines()) == 5
