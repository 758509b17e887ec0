"""``pgconnector tail`` against a running daemon: it mints a token from the configured
secret, subscribes, and prints one JSON event per line when stdout is not a terminal."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import asyncpg

from tests.e2e.support import PGCONNECTOR, base_env, daemon_factory, run, write_config
from tests.integration.helpers import free_port


async def test_tail_follows_the_running_daemon(database: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(database)
    await conn.execute("CREATE TABLE users (id serial PRIMARY KEY, name text);"
                       "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int)")
    config = write_config(tmp_path, {
        "postgres": {"dsn": database}, "capture": {"poll_interval": 0.1},
        "logging": {"format": "json"},
        "live": {"port": free_port(), "tables": ["users", "orders"],
                 "auth": {"jwt": {"secret": "tail-test-secret-0123456789abcdefghij"}},
                 "rules": [{"table": "orders", "where_claims": {"customer_id": "sub"}}]}})
    try:
        async with daemon_factory() as make:
            daemon = await make(config, tmp_path).start()
            await daemon.wait_active()
            proc = await asyncio.create_subprocess_exec(
                str(PGCONNECTOR), "tail", "-c", str(config), "*:users", "*:orders",
                "--claim", "sub=7", "--limit", "3", stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=base_env())
            await asyncio.sleep(1.5)  # connected
            await conn.execute("INSERT INTO users (name) VALUES ('ada'), ('bob')")
            await conn.execute("INSERT INTO orders (customer_id) VALUES (8), (7)")
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            events = [json.loads(line) for line in out.decode().splitlines()]
            assert [(e["table"], e["op"]) for e in events] == [
                ("users", "insert"), ("users", "insert"), ("orders", "insert")]
            assert events[2]["new"]["customer_id"] == 7  # customer 8's is not for sub 7
            # A query the endpoint refuses is one line and exit 1.
            refused = await run("tail", "-c", config, "*:nope", "--limit", "1")
            assert refused.code == 1 and refused.stderr_lines == [
                "error: q0: table public.nope cannot be subscribed"], refused
            await daemon.terminate()
    finally:
        await conn.close()
