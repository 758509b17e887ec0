from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import expand_env, parse
from connector.config import from_dict as config_from_dict
from connector.config import load as load_config
from connector.vocabulary import ConfigError, TableName, parse_table, parse_template

GOOD = {
    "postgres": {"dsn": "postgresql://postgres@127.0.0.1/postgres", "schema": "cdc"},
    "publishers": {"cache": {"type": "redis", "url": "redis://127.0.0.1:6379/0", "mode": "stream"},
                   "console": {"type": "stdout"}},
    "routes": [
        {"table": "public.users", "publisher": "cache", "channel": "users:{op}"},
        {"table": "users", "publisher": "console", "channel": "u:{id}",
         "operations": ["insert", "delete"]},
    ],
}


def problems(data: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse(data, env=env or {})
    return exc.value.problems


def test_good_config_parses_with_defaults() -> None:
    cfg = parse(GOOD, env={})
    assert cfg.postgres.schema == "cdc"
    assert cfg.capture.batch_size == 1000
    assert [r.publisher for r in cfg.routes] == ["cache", "console"]
    assert cfg.routes[0].operations == {"insert", "update", "delete", "truncate"}
    # both routes name the same table; its trigger covers the union of operations
    assert cfg.tables == {TableName("public", "users"): {"insert", "update", "delete", "truncate"}}
    assert cfg.routes[1].channel.columns == {"id"}


def test_yaml_and_json_files_load(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("publishers: {c: {type: stdout}}\nroutes:\n"
                 "  - {table: t, publisher: c, channel: 'x:{op}'}\n")
    j = tmp_path / "c.json"
    j.write_text('{"publishers": {"c": {"type": "stdout"}}, '
                 '"routes": [{"table": "t", "publisher": "c", "channel": "x"}]}')
    assert load_config(y).routes[0].table == TableName("public", "t")
    assert load_config(j).routes[0].channel.source == "x"


def test_env_expansion() -> None:
    value, errs = expand_env({"a": "${A}", "b": ["x${B:-dflt}y"], "c": "$${A}", "d": "${E:-}"},
                             {"A": "1"})
    assert value == {"a": "1", "b": ["xdflty"], "c": "${A}", "d": ""}
    assert errs == []
    _, errs = expand_env({"postgres": {"dsn": "${NOPE}"}}, {})
    assert errs == ["postgres.dsn: environment variable NOPE is not set"]


def test_empty_variable_uses_default() -> None:
    value, _ = expand_env("${A:-x}", {"A": ""})
    assert value == "x"


def test_unset_variable_is_reported_once() -> None:
    data = {**GOOD, "postgres": {"dsn": "${DB_URL}"}}
    assert problems(data) == ["postgres.dsn: environment variable DB_URL is not set"]


def test_every_problem_is_reported_with_its_path() -> None:
    data = {
        "postgres": {"bogus": 1},
        "publishers": {"cache": {"type": "redis", "mode": "pubsubx", "url": 5},
                       "k": {"type": "kafka"}},
        "routes": [
            {"table": "public.users", "publisher": "cahce", "channel": "users:{op"},
            {"table": "a.b.c", "publisher": "cache", "channel": "x",
             "operations": ["insert", "upsert"]},
            {"table": "t", "channel": "x"},
        ],
        "extra": True,
    }
    got = problems(data)
    assert "<root>: unknown key 'extra'" in got
    assert "postgres: unknown key 'bogus'" in got
    assert "publishers.cache.mode: 'pubsubx' is not one of pubsub, stream" in got
    assert "publishers.cache.url: expected string, got integer" in got
    assert any(p.startswith("publishers.k.type: unknown publisher type 'kafka'") for p in got)
    assert any(p.startswith("routes[0].publisher: unknown publisher 'cahce'") for p in got)
    assert any(p.startswith("routes[0].channel:") for p in got)
    assert any(p.startswith("routes[1].table:") for p in got)
    assert "routes[1].operations[1]: 'upsert' is not one of insert, update, delete, truncate" in got
    assert "routes[2]: 'publisher' is required" in got


@pytest.mark.parametrize("data, expected", [
    (None, "<dict>: empty config"),
    ([1], "<dict>: expected a mapping at the top level, got array"),
    ({"publishers": {}, "routes": []}, "publishers: should be non-empty"),
])
def test_structural_problems(data: object, expected: str) -> None:
    got = problems(data)
    assert any(p.startswith(expected.split(":")[0]) for p in got), got


def test_publisher_name_must_be_an_identifier() -> None:
    data = {**GOOD, "publishers": {"bad name": {"type": "stdout"}}}
    assert any(p.startswith('publishers["bad name"]') for p in problems(data))


def test_long_schema_rejected() -> None:
    data = {**GOOD, "postgres": {"schema": "s" * 41}}
    assert any(p.startswith("postgres.schema") for p in problems(data))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.yaml")
    assert exc.value.problems == [f"{tmp_path / 'nope.yaml'}: no such file"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("publishers: {a: [}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert "invalid YAML at line 1" in exc.value.problems[0]


@pytest.mark.parametrize("text, expected", [
    ("users", TableName("public", "users")),
    ("app.users", TableName("app", "users")),
    ("App.Users", TableName("App", "Users")),
    ('"My Schema"."Order ""Items""; drop"', TableName("My Schema", 'Order "Items"; drop')),
    ('"a.b"', TableName("public", "a.b")),
])
def test_parse_table(text: str, expected: TableName) -> None:
    assert parse_table(text) == expected


@pytest.mark.parametrize("text", ["a.b.c", '"unterminated', "a..b", '"x"y', "x" * 64])
def test_parse_table_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_table(text)


def test_parse_template() -> None:
    t = parse_template("{schema}.{table}:{op}:{id}:{Order Id}")
    assert t.columns == {"id", "Order Id"}
    assert parse_template("static").parts == (("static", None),)
    with pytest.raises(ValueError):
        parse_template("{id!r}")
    with pytest.raises(ValueError):
        parse_template("{}")


def test_server_section_absent_means_no_server() -> None:
    assert parse(GOOD, env={}).server is None


def test_server_section_defaults() -> None:
    server = parse({**GOOD, "server": {}}, env={}).server
    assert server is not None
    assert (server.enabled, server.host, server.port) == (True, "127.0.0.1", 9187)


def test_server_section_values() -> None:
    data = {**GOOD, "server": {"enabled": False, "host": "0.0.0.0", "port": 0}}
    server = parse(data, env={}).server
    assert server is not None
    assert (server.enabled, server.host, server.port) == (False, "0.0.0.0", 0)


@pytest.mark.parametrize(("server", "expected"), [
    ({"port": 70000}, "server.port: 70000 is greater than the maximum of 65535"),
    ({"port": -1}, "server.port: -1 is less than the minimum of 0"),
    ({"port": "9187"}, "server.port: expected integer, got string"),
    ({"host": ""}, "server.host: '' should be non-empty"),
    ({"enabled": "yes"}, "server.enabled: expected boolean, got string"),
    ({"listen": ":9187"}, "server: unknown key 'listen'"),
])
def test_server_section_problems_name_the_key(server: dict[str, object], expected: str) -> None:
    got = problems({**GOOD, "server": server})
    assert len(got) == 1 and got[0].startswith(expected), got


def test_redis_url_with_a_bad_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"publishers": {"c": {"type": "redis",
                                               "url": "redis://:s3cret@host:notaport/0"}},
                          "routes": [{"table": "t", "publisher": "c", "channel": "c"}]})
    assert exc.value.problems == ["publishers.c.url: invalid port"]


def test_retry_gives_up_on_attempts_or_age_and_never_by_default() -> None:
    from connector.vocabulary import RetryConfig

    assert not RetryConfig().gives_up(10_000, 1e9)
    assert RetryConfig(max_attempts=3).gives_up(3) and not RetryConfig(max_attempts=3).gives_up(2)
    assert RetryConfig(max_age=60).gives_up(1, 60.0)
    assert not RetryConfig(max_age=60).gives_up(1, 59.9)
