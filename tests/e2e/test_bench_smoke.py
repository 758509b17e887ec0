"""The benchmark harness keeps working: its smoke mode (every measure, tiny sizes, the wal
source's on a throwaway wal_level=logical cluster too) runs to the end and writes a results
table. Figures are not checked: benchmarks never fail CI."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.support import REPO_ROOT, base_env, run


def wal_cluster_left(table: str) -> bool:
    """Whether the data directory of the throwaway logical cluster (Individual runs names it)
    is still there: it must be removed with the cluster."""
    assert "WAL cluster: PostgreSQL" in table
    after = table.split("WAL cluster: PostgreSQL", 1)[1].split("data directory ", 1)[1]
    return Path(after.split(" ", 1)[0]).exists()


@pytest.mark.timeout(420)  # the run itself is given 300 s
async def test_bench_smoke_mode_writes_every_measure(tmp_path: Path) -> None:
    out = tmp_path / "smoke.md"
    # A database of its own: the default one (pgconnector_bench_smoke) is dropped and created
    # again by every smoke run, so two at once (another checkout's suite, a `make bench-smoke`
    # beside it) would pull it from under each other.
    database = f"pgconnector_bench_smoke_{uuid.uuid4().hex[:8]}"
    result = await run(REPO_ROOT / "bench" / "run.py", "--smoke", "--output", out,
                       "--database", database,
                       exe=Path(sys.executable), env=base_env(), cwd=REPO_ROOT, timeout=300)
    assert result.code == 0, result
    table = out.read_text()
    for measure in ("Idle:", "P1 single-row INSERT", "P1 single-row UPDATE",
                    "P1 single-row DELETE", "P2 one", "P3 drain", "P4 latency", "P5 daemon RSS",
                    "P1 wal source, single-row INSERT, 8 clients, daemon stopped",
                    "P1 wal source, single-row INSERT, 8 clients, daemon draining",
                    "P1 trigger source on the same logical cluster", "P2 wal source, one INSERT",
                    "P2 wal source, one UPDATE", "P3 wal source", "P4 wal source",
                    "P1 wal, the decoding floor: pg_recvlogical", "the walsender's CPU while",
                    "(pg_recvlogical to /dev/null)",
                    "P4 wal source: latency commit → subscriber, 1,000 changes/s",
                    "H drain a backlog", "H latency commit → handler call, 1,000 changes/s",
                    "H a handler sleeping 10 ms", "L live: 50 WebSocket clients",
                    "L live: 100 changes/s broadcast", "Idle wal: daemon",
                    "Idle wal: its walsender's",
                    "Idle wal: transactions/s the daemon"):
        assert measure in table, (measure, table)
    assert "could not be measured" not in table, table
    assert not wal_cluster_left(table), table
