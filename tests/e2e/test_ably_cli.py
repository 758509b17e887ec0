"""``pgconnector start`` publishing to Ably (the local endpoint), as a user runs it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import asyncpg

from tests.ably_endpoint import AblyEndpoint
from tests.e2e.support import Daemon, base_env, make_config, run, wait_until, write_config


async def test_start_streams_table_changes_to_ably(
        database: str, pg: asyncpg.Connection, ably_endpoint: AblyEndpoint, tmp_path: Path,
        daemons: Callable[..., Daemon]) -> None:
    await pg.execute("CREATE TABLE public.users (id int PRIMARY KEY, name text)")
    config = write_config(tmp_path, make_config(
        database,
        publishers={"ably": {"type": "ably", "api_key": "${ABLY_API_KEY}",
                             "endpoint": ably_endpoint.host, "port": ably_endpoint.port}},
        routes=[{"table": "users", "publisher": "ably", "channel": "users:{id}"}]))
    env = base_env(ABLY_API_KEY=ably_endpoint.key, **ably_endpoint.env())
    assert (await run("validate", "-c", config, env=env)).code == 0
    daemon = await daemons(config, tmp_path, env=env).start()
    await daemon.wait_active()
    await pg.execute("INSERT INTO users VALUES (1, 'Ada')")
    await pg.execute("UPDATE users SET name = 'Ada L.' WHERE id = 1")
    await pg.execute("DELETE FROM users WHERE id = 1")
    await wait_until(lambda: len(ably_endpoint.messages("users:1")) == 3, 20,
                     "three messages on users:1")
    code, _ = await daemon.terminate()
    assert code == 0, daemon.stderr()
    got = ably_endpoint.messages("users:1")
    assert [m.name for m in got] == ["insert", "update", "delete"]
    # alone, a message carries its event's id; several in one publish share <first id>~…:<n>
    event_ids = [m.data["id"] for m in got]
    for m in got:
        grouped = re.fullmatch(r"(?P<first>[^~:]+)~[0-9a-f]{16}:\d+", m.id)
        assert m.id == m.data["id"] or (grouped and grouped["first"] in event_ids), m.id
    assert len({m.id for m in got}) == 3
    assert got[1].data["changes"] == {"name": {"old": "Ada", "new": "Ada L."}}
    secret = ably_endpoint.key.split(":")[1]
    assert secret not in daemon.stderr() + daemon.stdout()
