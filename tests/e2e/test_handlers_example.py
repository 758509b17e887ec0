"""examples/handlers.py runs as README says, and as a library pgconnector stays quiet: its
logs go through the host's logging (nothing below WARNING without the host asking)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.e2e.support import REPO_ROOT, base_env, run


async def test_the_handlers_example_runs(database: str) -> None:
    result = await run(REPO_ROOT / "examples" / "handlers.py", exe=Path(sys.executable),
                       env=base_env(DATABASE_URL=database), cwd=REPO_ROOT, timeout=90)
    assert result.code == 0, result
    out = result.stdout.splitlines()
    assert sorted(line for line in out if line.startswith("paid:")) == [
        "paid: order 1 of ada: 12.50", "paid: order 2 of bob: 99.00"], result
    assert sorted(line for line in out if line.startswith("ship:")) == [
        "ship: delete order 1 (changed: [])", "ship: insert order 1 (changed: [])",
        "ship: insert order 2 (changed: [])", "ship: update order 1 (changed: ['status'])"], result
    assert [line.split(": ")[1] for line in out if line.startswith("transaction")] == [
        "2 change(s)", "1 change(s)", "1 change(s)"], result
    # A guest in the host program: no debug or info lines of ours on its stderr.
    assert "batch_delivered" not in result.stderr and "installed" not in result.stderr, result
