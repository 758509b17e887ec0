"""A daemon running config handlers, SIGKILLed three times while 20,000 changes stream: every
change reaches the handler (at least once), for both sources."""

from __future__ import annotations

import asyncio
import random
import textwrap
from pathlib import Path

import asyncpg
import pytest
import yaml

from tests.e2e.support import base_env, daemon_factory

pytestmark = pytest.mark.timeout(300)

TOTAL = 20_000
KILLS = 3
HANDLER = """
import os

OUT = os.environ["HANDLER_OUT"]

def record(event):
    with open(OUT, "a") as f:  # O_APPEND: one line per call, whole
        f.write(f"{event.new['id']}\\n")
"""


def handled(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["trigger", "wal"])
async def test_sigkill_three_times_loses_no_handler_call(
        source: str, logical_database: str, tmp_path: Path) -> None:
    url = logical_database  # the trigger source works on the logical cluster too
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    (tmp_path / "kill_handlers.py").write_text(textwrap.dedent(HANDLER))
    out = tmp_path / "handled.txt"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "postgres": {"dsn": url},
        "capture": {"source": source, "batch_size": 200, "poll_interval": 0.1},
        "handlers": [{"table": "items", "call": "kill_handlers:record",
                      "operations": ["insert"]}],
        "logging": {"format": "json"}}))
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE items (id serial PRIMARY KEY, n int)")
    env = base_env(HANDLER_OUT=str(out))
    try:
        async with daemon_factory() as make:
            daemon = await make(config, tmp_path, env=env).start()
            await daemon.wait_active()

            async def write() -> None:
                for _ in range(TOTAL // 20):  # 20 rows per transaction, about 4,000/s
                    await conn.execute("INSERT INTO items (n) SELECT g FROM "
                                       "generate_series(1, 20) g")
                    await asyncio.sleep(0.005)

            writer = asyncio.create_task(write())
            marks = sorted(rng.sample(range(TOTAL // 10, TOTAL * 3 // 4, 100), KILLS))
            writing_at_kill = 0
            for mark in marks:
                while len(handled(out)) < mark:
                    assert daemon.running, daemon.stderr()[-2000:]
                    await asyncio.sleep(0.02)
                await asyncio.sleep(rng.uniform(0, 0.05))
                await daemon.kill()
                writing_at_kill += not writer.done()
                daemon = await make(config, tmp_path, env=env).start()
                await daemon.wait_active()
            await writer
            async with asyncio.timeout(120):
                while len(set(handled(out))) < TOTAL:
                    assert daemon.running, daemon.stderr()[-2000:]
                    await asyncio.sleep(0.1)
            await daemon.terminate()
        assert writing_at_kill >= 1, "every kill came after the writer finished"
    finally:
        await conn.close()
    got = handled(out)
    assert set(got) == set(range(1, TOTAL + 1)), f"seed {seed}"
    # Re-deliveries are bounded by what was in flight at each kill.
    assert len(got) - TOTAL <= KILLS * 2_000, (len(got) - TOTAL, seed)
