"""The benchmark harness keeps working: its smoke mode (every measure, tiny sizes) runs to the
end and writes a results table. Figures are not checked: benchmarks never fail CI."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.e2e.support import REPO_ROOT, base_env, run


async def test_bench_smoke_mode_writes_every_measure(tmp_path: Path) -> None:
    out = tmp_path / "smoke.md"
    result = await run(REPO_ROOT / "bench" / "run.py", "--smoke", "--output", out,
                       exe=Path(sys.executable), env=base_env(), cwd=REPO_ROOT, timeout=300)
    assert result.code == 0, result
    table = out.read_text()
    for measure in ("Idle:", "P1 single-row INSERT", "P1 single-row UPDATE",
                    "P1 single-row DELETE", "P2 one", "P3 drain", "P4 latency", "P5 daemon RSS"):
        assert measure in table, (measure, table)
