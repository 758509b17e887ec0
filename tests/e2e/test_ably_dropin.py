"""The Ably Postgres connector's own config files, unchanged, run by ``pgconnector start``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from tests.ably_endpoint import AblyEndpoint
from tests.e2e.support import Daemon, base_env, run, wait_until


def legacy_files(database: str, key: str, directory: Path) -> dict[str, Path]:
    """That project's default.json and .env, filled in for the test database."""
    url = urlsplit(database)
    db = {"host": url.hostname or "127.0.0.1", "port": url.port or 5432,
          "user": unquote(url.username or "postgres"), "password": "postgres",
          "database": unquote(url.path.lstrip("/"))}
    mapping = [{"tablename": "users", "ablychannelname": "ably-users-added", "operation": "INSERT"},
               {"tablename": "users", "ablychannelname": "ably-users-updated",
                "operation": "UPDATE"},
               {"tablename": "users", "ablychannelname": "ably-users-removed",
                "operation": "DELETE"}]
    default = directory / "default.json"
    default.write_text(json.dumps({"dbConfig": db, "connector": mapping, "ably": {"apiKey": key}},
                                  indent=4))
    env = directory / ".env"
    env.write_text(f"DB_HOST={db['host']}\nDB_PORT={db['port']}\nDB_USER={db['user']}\n"
                   f"DB_PASSWORD={db['password']}\nDB_NAME={db['database']}\n"
                   f"ABLY_API_KEY={key}\nABLY_CONNECTOR={json.dumps(mapping)}\n")
    return {"json": default, "env": env}


@pytest.mark.parametrize("form", ["json", "env"])
async def test_legacy_config_runs_unchanged(
        form: str, database: str, pg: asyncpg.Connection, ably_endpoint: AblyEndpoint,
        tmp_path: Path, daemons: Callable[..., Daemon]) -> None:
    # the table of that project's README: no primary key
    await pg.execute("CREATE TABLE users (id integer, name text)")
    config = legacy_files(database, ably_endpoint.key, tmp_path)[form]
    env = base_env(ABLY_ENDPOINT=ably_endpoint.host, ABLY_PORT=str(ably_endpoint.port),
                   **ably_endpoint.env())
    for name in ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME", "ABLY_API_KEY",
                 "ABLY_CONNECTOR"):
        env.pop(name, None)
    checked = await run("validate", "-c", config, env=env)
    assert checked.code == 0 and "3 route(s), 1 table(s)" in checked.stdout, checked
    daemon = await daemons(config, tmp_path, env=env).start()
    await daemon.wait_active()
    await pg.execute("INSERT INTO users VALUES (1, 'Ada')")
    await pg.execute("UPDATE users SET name = 'Ada L.'")
    await pg.execute("DELETE FROM users")
    await wait_until(lambda: len(ably_endpoint.messages()) == 3, 20, "three messages")
    code, _ = await daemon.terminate()
    assert code == 0, daemon.stderr()
    got = {m.channel: m for m in ably_endpoint.messages()}
    assert got["ably-users-added"].data["new"] == {"id": 1, "name": "Ada"}
    assert got["ably-users-updated"].data["changes"] == {"name": {"old": "Ada", "new": "Ada L."}}
    assert got["ably-users-removed"].data["old"] == {"id": 1, "name": "Ada L."}
    assert ably_endpoint.key.split(":")[1] not in daemon.stderr() + daemon.stdout()


@pytest.mark.parametrize("form", ["json", "env"])
async def test_convert_prints_a_config_that_validates(
        form: str, database: str, tmp_path: Path) -> None:
    key = "app.key:very-secret"
    files = legacy_files(database, key, tmp_path)
    env = base_env()
    for name in ("DB_HOST", "DB_PASSWORD", "ABLY_API_KEY", "ABLY_ENDPOINT", "ABLY_PORT"):
        env.pop(name, None)
    converted = await run("convert", files[form], env=env)
    assert converted.code == 0, converted
    assert "very-secret" not in converted.stdout + converted.stderr
    assert "ABLY_API_KEY and DB_PASSWORD" in converted.stderr
    out = tmp_path / "pgconnector.yaml"
    out.write_text(converted.stdout)
    ok = await run("validate", "-c", out, env={**env, "ABLY_API_KEY": key,
                                               "DB_PASSWORD": "postgres"})
    assert ok.code == 0 and "3 route(s)" in ok.stdout, ok
    unset = await run("validate", "-c", out, env=env)
    assert unset.code == 2 and "ABLY_API_KEY" in unset.stderr

    inline = await run("convert", "--inline-secrets", files[form], env=env)
    assert inline.code == 0 and "very-secret" in inline.stdout


async def test_convert_refuses_a_file_that_is_not_a_legacy_config(tmp_path: Path) -> None:
    ours = tmp_path / "pgconnector.yaml"
    ours.write_text("publishers: {}\nroutes: []\n")
    result = await run("convert", ours)
    assert result.code == 2
    assert result.stderr_lines == [
        f"error: {ours}: not an Ably Postgres connector config (expected a JSON file with "
        "dbConfig, connector and ably, or a .env file)"]
