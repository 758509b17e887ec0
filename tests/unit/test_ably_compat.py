"""The Ably Postgres connector's configs (default.json and .env) read as ours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector import ably_compat
from connector.config import Config, ConfigError, parse

KEY = "app.key:s3cret"

DEFAULT_JSON = {
    "dbConfig": {"host": "db", "port": 5432, "user": "postgres", "password": "pa$$w@rd/1",
                 "database": "mydb"},
    "connector": [
        {"tablename": "users", "ablychannelname": "ablyusersins", "operation": "INSERT"},
        {"tablename": "users", "ablychannelname": "ablyusersupt", "operation": "UPDATE"},
        {"tablename": "users", "ablychannelname": "ablyusersdel", "operation": "DELETE"},
    ],
    "ably": {"apiKey": KEY},
}

DOTENV = """DB_HOST=db
DB_PORT=5432
DB_USER=postgres
DB_PASSWORD=postgres
DB_NAME=mydb
ABLY_API_KEY=app.key:s3cret
ABLY_CONNECTOR=[{"tablename":"users","ablychannelname":"ably-users-added","operation":"INSERT"},{"tablename":"public.orders","ablychannelname":"ably-{orders}","operation":"delete"}]
"""


def test_default_json_becomes_one_publisher_and_a_route_per_mapping() -> None:
    data = ably_compat.from_json(DEFAULT_JSON, environ={})
    assert data["publishers"] == {"ably": {"type": "ably", "api_key": KEY}}
    assert data["postgres"] == {"host": "db", "port": 5432, "user": "postgres",
                                "password": "pa$$$$w@rd/1", "database": "mydb"}
    assert [(r["table"], r["operations"], r["channel"]) for r in data["routes"]] == [
        ("users", ["insert"], "ablyusersins"), ("users", ["update"], "ablyusersupt"),
        ("users", ["delete"], "ablyusersdel")]
    config = parse(data, env={})
    assert config.postgres.password == "pa$$w@rd/1"  # literal, not expanded
    assert config.tables  # one table, three operations
    ((_, ops),) = config.tables.items()
    assert ops == {"insert", "update", "delete"}


def test_dotenv_form_with_braces_schema_and_lowercase_operation(tmp_path: Path) -> None:
    env = ably_compat.read_env_file(DOTENV, environ={})
    data = ably_compat.from_env(env)
    assert data["postgres"]["port"] == 5432 and data["postgres"]["database"] == "mydb"
    routes = data["routes"]
    assert routes[1] == {"table": "public.orders", "operations": ["delete"],
                         "publisher": "ably", "channel": "ably-{{orders}}"}
    config = parse(data, env={})
    parts = config.routes[1].channel.parts  # a literal channel: no fields
    assert "".join(lit for lit, _ in parts) == "ably-{orders}"
    assert all(f is None for _, f in parts)


def test_real_environment_wins_over_the_env_file_and_can_set_the_endpoint() -> None:
    env = ably_compat.read_env_file(DOTENV, environ={"DB_HOST": "127.0.0.1", "PATH": "/x",
                                                     "ABLY_ENDPOINT": "localhost",
                                                     "ABLY_PORT": "8443"})
    data = ably_compat.from_env(env)
    assert data["postgres"]["host"] == "127.0.0.1"
    assert data["publishers"]["ably"] == {"type": "ably", "api_key": KEY,
                                          "endpoint": "localhost", "port": 8443}


@pytest.mark.parametrize(("change", "problem"), [
    ({"connector": [{"tablename": "t", "ablychannelname": "c", "operation": "UPSERT"}]},
     "connector[0].operation: unknown operation 'UPSERT' (expected INSERT, UPDATE, DELETE or "
     "TRUNCATE)"),
    ({"connector": [{"tablename": "t", "operation": "INSERT"}]},
     "connector[0].ablychannelname: required (a string)"),
    ({"connector": []}, "connector: expected a non-empty list"),
    ({"ably": {}}, "ably.apiKey: required (a string)"),
    ({"dbConfig": {"port": "fivefour"}}, "dbConfig.port: expected a port number, got 'fivefour'"),
])
def test_bad_json_names_the_legacy_key(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ably_compat.LegacyConfigError) as err:
        ably_compat.from_json({**DEFAULT_JSON, **change}, environ={})
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems
    assert not any("s3cret" in p for p in err.value.problems)


def test_bad_env_names_the_variable() -> None:
    with pytest.raises(ably_compat.LegacyConfigError) as err:
        ably_compat.from_env({"ABLY_CONNECTOR": "[{oops", "DB_PORT": "x"})
    problems = err.value.problems
    assert "ABLY_API_KEY: not set" in problems
    assert any(p.startswith("ABLY_CONNECTOR: not valid JSON") for p in problems)
    assert "DB_PORT: expected a port number, got 'x'" in problems


def test_files_of_both_forms_load_transparently(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DB_HOST", "ABLY_ENDPOINT", "ABLY_PORT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "default.json").write_text(json.dumps(DEFAULT_JSON))
    (tmp_path / ".env").write_text(DOTENV)
    (tmp_path / "prod.env").write_text(DOTENV)
    for name in ("default.json", ".env", "prod.env"):
        config = Config.load(tmp_path / name)
        assert config.publishers["ably"].type == "ably"
        assert config.postgres.host == "db"
    (tmp_path / "bad.json").write_text(json.dumps({**DEFAULT_JSON, "ably": []}))
    with pytest.raises(ConfigError) as err:
        Config.load(tmp_path / "bad.json")
    assert err.value.problems == ["ably.apiKey: required (a string)"]


def test_yaml_output_keeps_secrets_out_unless_asked() -> None:
    data = ably_compat.from_json(DEFAULT_JSON, environ={})
    text, needed = ably_compat.to_yaml(data)
    assert needed == ["ABLY_API_KEY", "DB_PASSWORD"]
    assert "s3cret" not in text and "w@rd" not in text
    back = parse(yaml.safe_load(text), env={"ABLY_API_KEY": KEY, "DB_PASSWORD": "pw"})
    assert back.postgres.password == "pw" and len(back.routes) == 3
    text, needed = ably_compat.to_yaml(data, inline_secrets=True)
    assert not needed
    back = parse(yaml.safe_load(text), env={})
    assert back.postgres.password == "pa$$w@rd/1"
    assert back.publishers["ably"].options["api_key"] == KEY


def test_our_own_configs_are_not_mistaken_for_legacy() -> None:
    assert not ably_compat.is_legacy({"publishers": {}, "routes": []})
    assert not ably_compat.is_legacy({"connector": [], "routes": []})
    assert ably_compat.is_legacy({"connector": []})
    assert ably_compat.is_env_path("config/.env") and ably_compat.is_env_path("x/prod.env")
    assert not ably_compat.is_env_path("config.yaml")
