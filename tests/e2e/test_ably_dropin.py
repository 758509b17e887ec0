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


NODE_VARIABLES = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME", "ABLY_API_KEY",
                  "ABLY_CONNECTOR", "ABLY_ENDPOINT", "ABLY_PORT")


def clean_env(**overrides: str) -> dict[str, str]:
    env = base_env()
    for name in NODE_VARIABLES:
        env.pop(name, None)
    return {**env, **overrides}


async def test_the_node_projects_own_default_json_needs_only_a_real_key(tmp_path: Path) -> None:
    # ably-labs/ably-postgres-connector config/default.json, verbatim: "API_KEY" is a placeholder
    mapping = [{"tablename": "users", "ablychannelname": f"ably-users-{what}", "operation": op}
               for what, op in (("added", "INSERT"), ("updated", "UPDATE"),
                                ("removed", "DELETE"))]
    default = tmp_path / "default.json"
    default.write_text(json.dumps({
        "dbConfig": {"host": "db", "port": 5432, "user": "postgres", "password": "postgres",
                     "database": "mydb"},
        "connector": mapping, "ably": {"apiKey": "API_KEY"}}, indent=4))
    result = await run("validate", "-c", default, env=clean_env())
    assert result.code == 2, result
    assert result.stderr_lines == [
        "error: ably.apiKey: not an Ably API key (expected appId.keyId:secret)"], result
    # convert writes ${ABLY_API_KEY}, so the placeholder is no problem there, unless inlined
    converted = await run("convert", default, env=clean_env())
    assert converted.code == 0 and "${ABLY_API_KEY}" in converted.stdout, converted
    converted = await run("convert", "--inline-secrets", default, env=clean_env())
    assert converted.code == 2 and converted.stdout == "", converted
    assert converted.stderr_lines == [
        "error: ably.apiKey: not an Ably API key (expected appId.keyId:secret)"], converted
    bad = json.loads(default.read_text())
    bad["ably"]["apiKey"] = "app.key:s3cret"
    bad["connector"][1]["operation"] = "UPSERT"
    default.write_text(json.dumps(bad))
    result = await run("validate", "-c", default, env=clean_env())
    assert result.code == 2, result
    assert result.stderr_lines == [
        "error: connector[1].operation: unknown operation 'UPSERT' (expected INSERT, UPDATE, "
        "DELETE or TRUNCATE)"], result
    assert "s3cret" not in result.stdout + result.stderr
    bad["connector"][1]["operation"] = "update"
    bad["connector"][2]["tablename"] = "a.b.c"
    default.write_text(json.dumps(bad))
    for command in (("validate", "-c"), ("convert",)):
        result = await run(*command, default, env=clean_env())
        assert result.code == 2 and result.stdout == "", result
        assert result.stderr_lines == [
            "error: connector[2].tablename: expected schema.table or table: 'a.b.c'"], result


async def test_variables_alone_when_the_env_file_is_missing(tmp_path: Path) -> None:
    # the Node connector's Docker form: docker-compose's env_file, no .env in the image
    mapping = json.dumps([{"tablename": "users", "ablychannelname": "c", "operation": "INSERT"}])
    env = clean_env(DB_HOST="db", DB_PASSWORD="pw-secret", ABLY_API_KEY="app.key:s3cret",
                    ABLY_CONNECTOR=mapping)
    missing = tmp_path / "config" / ".env"
    result = await run("validate", "-c", missing, env=env)
    assert result.code == 0 and "1 route(s)" in result.stdout, result
    converted = await run("convert", missing, env=env)
    assert converted.code == 0 and "table: users" in converted.stdout, converted
    assert "s3cret" not in converted.stdout + converted.stderr
    assert "pw-secret" not in converted.stdout + converted.stderr

    result = await run("validate", "-c", missing, env={**env, "ABLY_CONNECTOR": "[{oops"})
    assert result.code == 2, result
    assert result.stderr_lines == [
        "error: ABLY_CONNECTOR: not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 3 (char 2)"], result
    result = await run("validate", "-c", missing, env=clean_env())
    assert result.code == 2 and result.stderr_lines == [f"error: {missing}: no such file"]
