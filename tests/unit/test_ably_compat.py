"""The Ably Postgres connector's configs (default.json and .env) read as ours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.compat import ably as ably_compat
from connector.config import load as load_config
from connector.config import parse
from connector.vocabulary import ConfigError

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
        config = load_config(tmp_path / name)
        assert config.publishers["ably"].type == "ably"
        assert config.postgres.host == "db"
    (tmp_path / "bad.json").write_text(json.dumps({**DEFAULT_JSON, "ably": []}))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "bad.json")
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


# The Node project's own files, verbatim (config/default.json, config/.env): placeholder keys.
NODE_DEFAULT_JSON = {
    "dbConfig": {"host": "db", "port": 5432, "user": "postgres", "password": "postgres",
                 "database": "mydb"},
    "connector": [
        {"tablename": "users", "ablychannelname": "ably-users-added", "operation": "INSERT"},
        {"tablename": "users", "ablychannelname": "ably-users-updated", "operation": "UPDATE"},
        {"tablename": "users", "ablychannelname": "ably-users-removed", "operation": "DELETE"},
    ],
    "ably": {"apiKey": "API_KEY"},
}


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return err.value.problems


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ably_compat.ENV_KEYS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_problems_found_after_conversion_name_the_legacy_keys(
        tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    (tmp_path / "default.json").write_text(json.dumps(NODE_DEFAULT_JSON))
    assert load_problems(tmp_path / "default.json") == [
        "ably.apiKey: not an Ably API key (expected appId.keyId:secret)"]
    bad = {**DEFAULT_JSON, "connector": [
        {"tablename": "users", "ablychannelname": "a", "operation": "INSERT"},
        {"tablename": "a.b.c", "ablychannelname": "b", "operation": "INSERT"}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert load_problems(tmp_path / "bad.json") == [
        "connector[1].tablename: expected schema.table or table: 'a.b.c'"]
    (tmp_path / ".env").write_text(
        DOTENV.replace(KEY, "dummy").replace('"public.orders"', '"x.y.z"'))
    assert load_problems(tmp_path / ".env") == [
        "ABLY_API_KEY: not an Ably API key (expected appId.keyId:secret)",
        "ABLY_CONNECTOR[1].tablename: expected schema.table or table: 'x.y.z'"]


def test_the_problems_of_a_bad_mapping_each_get_a_line(tmp_path: Path) -> None:
    bad = {**DEFAULT_JSON, "connector": [
        {"tablename": "users", "ablychannelname": "a", "operation": "INSERT"},
        {"tablename": "users", "ablychannelname": "b", "operation": "UPSERT", "extra": 1},
        "users"]}
    (tmp_path / "default.json").write_text(json.dumps(bad))
    assert load_problems(tmp_path / "default.json") == [
        "connector[1].operation: unknown operation 'UPSERT' (expected INSERT, UPDATE, DELETE or "
        "TRUNCATE)",
        "connector[1]: unknown key 'extra'",
        "connector[2]: expected an object"]


@pytest.mark.parametrize("op", ["insert", "Update", "DELETE", "truncate"])
def test_operation_in_any_case(op: str) -> None:
    data = ably_compat.from_json({**DEFAULT_JSON, "connector": [
        {"tablename": "users", "ablychannelname": "c", "operation": op}]}, environ={})
    assert data["routes"][0]["operations"] == [op.lower()]


def test_braces_and_dollars_in_names_stay_literal() -> None:
    data = ably_compat.from_json({**DEFAULT_JSON, "connector": [
        {"tablename": "billing.invoices", "ablychannelname": "inv{oices}:$x}{",
         "operation": "INSERT"}]}, environ={})
    assert data["routes"][0]["channel"] == "inv{{oices}}:$$x}}{{"
    config = parse(data, env={})
    assert "".join(lit for lit, _ in config.routes[0].channel.parts) == "inv{oices}:$x}{"
    assert str(config.routes[0].table) == "billing.invoices"


def test_a_repeated_mapping_is_one_route_every_other_one_is_delivered() -> None:
    same = {"tablename": "users", "ablychannelname": "a", "operation": "INSERT"}
    data = ably_compat.from_json({**DEFAULT_JSON, "connector": [
        same, {**same, "operation": "insert"}, {**same, "ablychannelname": "b"},
        {**same, "operation": "UPDATE"}]}, environ={})
    # "INSERT" and "insert" are the same mapping: the Node control table kept one row
    assert [(r["channel"], r["operations"]) for r in data["routes"]] == [
        ("a", ["insert"]), ("b", ["insert"]), ("a", ["update"])]
    assert data.paths["routes[1]"] == "connector[2]"


def test_environment_values_win_even_when_empty() -> None:
    env = ably_compat.read_env_file(DOTENV, environ={"DB_PASSWORD": "", "DB_HOST": "h"})
    assert env["DB_PASSWORD"] == "" and env["DB_HOST"] == "h"
    data = ably_compat.from_env(env)
    assert "password" not in data["postgres"] and data["postgres"]["host"] == "h"


def test_env_values_are_not_interpolated_nor_expanded() -> None:
    env = ably_compat.read_env_file(DOTENV.replace("DB_PASSWORD=postgres",
                                                   "DB_PASSWORD=a${HOME}b$$c"), environ={})
    config = parse(ably_compat.from_env(env), env={"HOME": "/root"})
    assert config.postgres.password == "a${HOME}b$$c"


def test_missing_env_file_reads_the_environment_as_the_node_connector_does(
        tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "config" / ".env"
    assert load_problems(missing) == [f"{missing}: no such file"]
    for line in DOTENV.splitlines():
        name, _, value = line.partition("=")
        clean_env.setenv(name, value)
    config = load_config(missing)
    assert config.postgres.host == "db" and len(config.routes) == 2


@pytest.mark.parametrize("port", [True, 0, 70000, "54x", 5432.5])
def test_bad_ports(port: object) -> None:
    with pytest.raises(ably_compat.LegacyConfigError) as err:
        ably_compat.from_json({**DEFAULT_JSON, "dbConfig": {"port": port}}, environ={})
    assert err.value.problems == [f"dbConfig.port: expected a port number, got {port!r}"]


def test_a_password_of_the_wrong_type_is_not_echoed() -> None:
    with pytest.raises(ably_compat.LegacyConfigError) as err:
        ably_compat.from_json({**DEFAULT_JSON, "dbConfig": {"password": 987654321}}, environ={})
    assert err.value.problems == ["dbConfig.password: expected a string"]


@pytest.mark.parametrize(("db", "dsn"), [
    ({"ssl": True}, "postgresql://?sslmode=verify-full"),
    ({"ssl": False}, "postgresql://?sslmode=disable"),
    ({"ssl": {"rejectUnauthorized": False}}, "postgresql://?sslmode=require"),
    ({"connectionString": "postgres://u@h/d?application_name=x", "ssl": {}},
     "postgres://u@h/d?application_name=x&sslmode=verify-full"),
    ({"connectionString": "postgres://u@h/d?sslmode=disable", "ssl": True},
     "postgres://u@h/d?sslmode=disable"),
])
def test_node_postgres_ssl_and_connection_string(db: dict[str, Any], dsn: str) -> None:
    data = ably_compat.from_json({**DEFAULT_JSON, "dbConfig": db}, environ={})
    assert data["postgres"]["dsn"] == dsn
    parse(data, env={})


def test_other_node_postgres_settings() -> None:
    data = ably_compat.from_json({**DEFAULT_JSON, "dbConfig": {
        "host": "h", "connectionTimeoutMillis": 2500, "keepAlive": True,
        "application_name": "legacy", "statement_timeout": 1000}}, environ={})
    assert data["postgres"] == {"host": "h", "application_name": "legacy",
                                "connect_timeout": 2.5}
    with pytest.raises(ably_compat.LegacyConfigError) as err:
        ably_compat.from_json({**DEFAULT_JSON, "dbConfig": {
            "ssl": {"ca": "-----BEGIN CERTIFICATE-----"}, "bogus": 1}}, environ={})
    assert err.value.problems == [
        "dbConfig.ssl.ca: not supported (put sslrootcert, sslcert and sslkey files in "
        "dbConfig.connectionString)",
        "dbConfig.bogus: not supported (pgconnector reads host, port, user, password, database, "
        "connectionString, ssl, application_name and connectionTimeoutMillis)"]


def test_unknown_top_level_keys_of_a_legacy_file() -> None:
    assert ably_compat.is_legacy({"dbConfig": {}, "ably": {}})
    assert ably_compat.is_legacy({**DEFAULT_JSON, "comment": "x"})
    assert not ably_compat.is_legacy({**DEFAULT_JSON, "publishers": {}})
    with pytest.raises(ably_compat.LegacyConfigError) as err:
        ably_compat.from_json({**DEFAULT_JSON, "comment": "x"}, environ={})
    assert err.value.problems == ["<root>: unknown key 'comment'"]
    with pytest.raises(ably_compat.LegacyConfigError) as err:
        ably_compat.from_json({"dbConfig": {}, "ably": {"apiKey": KEY}}, environ={})
    assert err.value.problems[0].startswith("connector: expected a non-empty list")


def test_a_password_inside_the_connection_string_becomes_a_reference_too() -> None:
    data = ably_compat.from_json({**DEFAULT_JSON, "dbConfig": {
        "connectionString": "postgres://u:pa%40ss@h:6543/d?sslmode=require&password=x"}},
        environ={})
    text, needed = ably_compat.to_yaml(data)
    assert needed == ["ABLY_API_KEY", "DB_PASSWORD"]
    assert "pa%40ss" not in text and "password=x" not in text
    back = parse(yaml.safe_load(text), env={"ABLY_API_KEY": KEY, "DB_PASSWORD": "pw"})
    assert back.postgres.dsn == "postgres://u@h:6543/d?sslmode=require"
    assert back.postgres.password == "pw"
    inline, _ = ably_compat.to_yaml(data, inline_secrets=True)
    assert "pa%40ss" in inline


def test_secrets_are_references_named_after_the_node_variables() -> None:
    env = ably_compat.read_env_file(DOTENV, environ={})
    text, needed = ably_compat.to_yaml(ably_compat.from_env(env))
    assert needed == ["ABLY_API_KEY", "DB_PASSWORD"]
    data = yaml.safe_load(text)
    assert data["publishers"]["ably"]["api_key"] == "${ABLY_API_KEY}"
    assert data["postgres"]["password"] == "${DB_PASSWORD}"
    assert "s3cret" not in text
    text, needed = ably_compat.to_yaml(
        ably_compat.from_env({k: v for k, v in env.items() if k != "DB_PASSWORD"}))
    assert needed == ["ABLY_API_KEY"] and "password" not in text
