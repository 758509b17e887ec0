"""Bad input through the real CLI: one clear line on stderr, the right exit code, nothing
installed, no secret printed. Plus ``validate``, ``--version`` and ``--help``."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from connector import __version__
from tests.e2e.support import (
    COMMANDS,
    base_env,
    make_config,
    run,
    schema_exists,
    with_dbname,
    with_password,
    with_port,
    write_config,
)

EXIT_RUNTIME = 1
EXIT_CONFIG = 2
SECRET = f"s3cret-{uuid.uuid4().hex[:12]}"
ROUTE = {"table": "public.items", "publisher": "cache", "channel": "e2e:{table}:{op}"}


@pytest.fixture
async def items(pg: asyncpg.Connection) -> None:
    await pg.execute("CREATE TABLE public.items (id int PRIMARY KEY, name text)")


def good_config(dsn: str, **extra: object) -> dict[str, object]:
    return make_config(with_password(dsn, SECRET), routes=[ROUTE], **extra)


@dataclass
class Case:
    """Builds a config in ``tmp`` for ``dsn``; returns (config path, env, code, message)."""

    build: Callable[[Path, str], tuple[Path, dict[str, str]]]
    code: int
    message: str


def case_missing_file(tmp: Path, dsn: str) -> tuple[Path, dict[str, str]]:
    return tmp / "does-not-exist.yaml", base_env()


def case_bad_yaml(tmp: Path, dsn: str) -> tuple[Path, dict[str, str]]:
    text = f"postgres:\n  dsn: {with_password(dsn, SECRET)}\nroutes: [\n  - table: items\n"
    return write_config(tmp, text), base_env()


def case_unknown_key(tmp: Path, dsn: str) -> tuple[Path, dict[str, str]]:
    return write_config(tmp, good_config(dsn, bogus_key=1)), base_env()


def case_wrong_type(tmp: Path, dsn: str) -> tuple[Path, dict[str, str]]:
    data = good_config(dsn)
    data["capture"] = {"batch_size": "many"}
    return write_config(tmp, data), base_env()


def case_unknown_publisher(tmp: Path, dsn: str) -> tuple[Path, dict[str, str]]:
    data = good_config(dsn)
    data["routes"] = [{**ROUTE, "publisher": "nosuch"}]
    return write_config(tmp, data), base_env()


UNSET_VAR = f"PGC_E2E_UNSET_{uuid.uuid4().hex[:8].upper()}"


def case_unset_var(tmp: Path, dsn: str) -> tuple[Path, dict[str, str]]:
    data = good_config(dsn)
    data["postgres"] = {"dsn": "${" + UNSET_VAR + "}"}
    env = base_env()
    env.pop(UNSET_VAR, None)
    return write_config(tmp, data), env


def case_unreachable(tmp: Path, dsn: str) -> tuple[Path, dict[str, str]]:
    data = good_config(dsn)
    data["postgres"] = {"dsn": with_port(with_password(dsn, SECRET), 1), "connect_timeout": 5}
    return write_config(tmp, data), base_env()


def case_missing_table(tmp: Path, dsn: str) -> tuple[Path, dict[str, str]]:
    data = good_config(dsn)
    data["routes"] = [ROUTE, {**ROUTE, "table": "public.no_such_table"}]
    return write_config(tmp, data), base_env()


CASES = {
    "missing-file": Case(case_missing_file, EXIT_CONFIG, "does-not-exist.yaml: no such file"),
    "bad-yaml": Case(case_bad_yaml, EXIT_CONFIG, "invalid YAML at line"),
    "unknown-key": Case(case_unknown_key, EXIT_CONFIG, "<root>: unknown key 'bogus_key'"),
    "wrong-type": Case(case_wrong_type, EXIT_CONFIG,
                       "capture.batch_size: expected integer, got string"),
    "unknown-publisher": Case(case_unknown_publisher, EXIT_CONFIG,
                              "routes[0].publisher: unknown publisher 'nosuch'"),
    "unset-var": Case(case_unset_var, EXIT_CONFIG,
                      f"postgres.dsn: environment variable {UNSET_VAR} is not set"),
    "unreachable-db": Case(case_unreachable, EXIT_RUNTIME,
                           "cannot connect to PostgreSQL at postgres@127.0.0.1:1/"),
    "missing-table": Case(case_missing_table, EXIT_CONFIG,
                          "routes[1].table: table public.no_such_table does not exist"),
}


def assert_one_error_line(result_stderr: list[str], message: str, text: str) -> None:
    assert len(result_stderr) == 1, f"expected one line on stderr:\n{text}"
    line = result_stderr[0]
    assert line.startswith("error: "), line
    assert message in line, line
    assert "Traceback" not in text


@pytest.mark.parametrize("command", ["install", "start"])
@pytest.mark.parametrize("name", list(CASES))
async def test_bad_input_is_one_line_and_installs_nothing(
        name: str, command: str, database: str, items: None, tmp_path: Path) -> None:
    case = CASES[name]
    config, env = case.build(tmp_path, database)
    result = await run(command, "-c", config, env=env, cwd=tmp_path, timeout=30)
    assert result.code == case.code, result
    assert_one_error_line(result.stderr_lines, case.message, str(result))
    assert result.stdout == "", result
    assert SECRET not in result.stdout + result.stderr
    assert not await schema_exists(database), f"{command} installed something:\n{result}"


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.code == EXIT_CONFIG
                                  and n != "missing-table"])
async def test_validate_reports_config_problems(name: str, database: str, tmp_path: Path
                                                ) -> None:
    case = CASES[name]
    config, env = case.build(tmp_path, database)
    result = await run("validate", "-c", config, env=env, cwd=tmp_path)
    assert result.code == EXIT_CONFIG, result
    assert_one_error_line(result.stderr_lines, case.message, str(result))
    assert SECRET not in result.stdout + result.stderr


async def test_every_problem_gets_its_own_line(database: str, tmp_path: Path) -> None:
    data = good_config(database, bogus_key=1)
    data["routes"] = [{**ROUTE, "publisher": "nosuch"}]
    result = await run("validate", "-c", write_config(tmp_path, data), cwd=tmp_path)
    assert result.code == EXIT_CONFIG, result
    assert result.stderr_lines == [
        "error: <root>: unknown key 'bogus_key'",
        "error: routes[0].publisher: unknown publisher 'nosuch' (defined: cache)",
    ], result


@pytest.fixture
async def password_role(pg: asyncpg.Connection) -> AsyncIterator[str]:
    """A login role with a password (trust auth does not check it, so the tests below use a
    database or role that does not exist to be refused)."""
    role = f"pgc_pw_{uuid.uuid4().hex[:10]}"
    await pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")
    yield role
    await pg.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.parametrize("command", ["install", "start", "status", "uninstall"])
@pytest.mark.parametrize("refusal", ["no-such-database", "no-such-role"])
async def test_refused_connection_is_one_line_without_the_password(
        refusal: str, command: str, database: str, items: None, password_role: str,
        tmp_path: Path) -> None:
    missing = f"pgc_missing_{uuid.uuid4().hex[:8]}"
    if refusal == "no-such-database":
        dsn = with_dbname(with_password(database, SECRET, user=password_role), missing)
        expected = f'database "{missing}" does not exist'
    else:
        dsn = with_password(database, SECRET, user=missing)
        expected = f'role "{missing}" does not exist'
    data = make_config(dsn, routes=[ROUTE])
    result = await run(command, "-c", write_config(tmp_path, data), cwd=tmp_path, timeout=30)
    assert result.code == EXIT_RUNTIME, result
    assert_one_error_line(result.stderr_lines, expected, str(result))
    assert "PostgreSQL at" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert not await schema_exists(database)


@pytest.mark.parametrize("command", ["install", "start"])
async def test_malformed_dsn_is_a_config_problem_without_the_password(
        command: str, database: str, items: None, tmp_path: Path) -> None:
    dsn = with_password(database, SECRET).replace(":5432/", ":notaport/")
    data = make_config(dsn, routes=[ROUTE])
    result = await run(command, "-c", write_config(tmp_path, data), cwd=tmp_path, timeout=30)
    assert result.code == EXIT_CONFIG, result
    assert_one_error_line(result.stderr_lines, "postgres.dsn: invalid connection string",
                          str(result))
    assert SECRET not in result.stdout + result.stderr
    assert not await schema_exists(database)


async def test_validate_good_file_prints_ok_without_connecting(tmp_path: Path) -> None:
    # Port 1 answers nothing: validate must not try to connect.
    dsn = with_password("postgresql://postgres@127.0.0.1:1/nowhere", SECRET)
    config = write_config(tmp_path, make_config(dsn, routes=[ROUTE]))
    result = await run("validate", "-c", config, cwd=tmp_path)
    assert result.code == 0, result
    assert result.stdout.startswith("OK"), result
    assert "1 publisher(s), 1 route(s), 1 table(s)" in result.stdout
    assert result.stderr == ""
    assert SECRET not in result.stdout


async def test_validate_accepts_json_and_env_defaults(tmp_path: Path) -> None:
    data = make_config("${PGC_E2E_NOT_SET_EITHER:-postgresql://postgres@127.0.0.1/x}",
                       routes=[ROUTE])
    config = tmp_path / "config.json"
    config.write_text(json.dumps(data))
    result = await run("validate", "-c", config, cwd=tmp_path)
    assert result.code == 0, result
    assert result.stdout.startswith("OK"), result


async def test_version() -> None:
    result = await run("--version")
    assert result.code == 0, result
    assert result.stdout.strip() == f"pgconnector {__version__}"


async def test_no_arguments_shows_usage() -> None:
    result = await run(env=base_env(COLUMNS="200"))
    assert result.code in (0, EXIT_CONFIG), result  # click >= 8.2 exits 2 here
    assert "Usage: pgconnector" in result.stdout, result


@pytest.mark.parametrize("command", [None, *COMMANDS])
async def test_help(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    result = await run(*args, env=base_env(COLUMNS="200"))
    assert result.code == 0, result
    assert "Usage: pgconnector" in result.stdout, result
    assert result.stderr == ""
    if command is None:
        for c in COMMANDS:
            assert c in result.stdout
    elif command != "demo":
        assert "--config" in result.stdout


async def test_unknown_command_fails() -> None:
    result = await run("strat", env=base_env(COLUMNS="200"))
    assert result.code == EXIT_CONFIG, result
    assert "strat" in result.stderr
