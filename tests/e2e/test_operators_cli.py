"""Operators through the real ``pgconnector`` executable: ``validate`` checks their SQL against
the database (not with --offline), a bad one is one line naming its key path and stops
``install`` before anything is written, ``operators rebuild`` recomputes the derived table, and
``status`` shows each operator. EventStreamex's example: posts, comments and
post_with_comments_counts. (Streaming itself: tests/integration/test_operators.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.support import run, schema_exists, with_port, write_config

EXIT_RUNTIME = 1
EXIT_CONFIG = 2
NAME = "post_with_comments_counts"

TABLES = """
CREATE TABLE posts (id serial PRIMARY KEY, title text NOT NULL);
CREATE TABLE comments (id serial PRIMARY KEY,
                       post_id int REFERENCES posts ON DELETE CASCADE, body text);
CREATE TABLE post_with_comments_counts (id int PRIMARY KEY, title text,
                                        comments_count int NOT NULL);
"""

# Four lines (EventStreamex's example), so an error's line number can be checked.
MERGE = "\n".join([
    "MERGE INTO post_with_comments_counts dest",
    "USING (SELECT p.id, p.title, (SELECT count(*) FROM comments c WHERE c.post_id = p.id) "
    "AS comments_count FROM posts p WHERE p.id = $1) src ON src.id = dest.id",
    "WHEN NOT MATCHED THEN INSERT (id, title, comments_count) "
    "VALUES (src.id, src.title, src.comments_count)",
    "WHEN MATCHED THEN UPDATE SET title = src.title, comments_count = src.comments_count",
]) + "\n"

# What the derived table must hold: a fresh recomputation from posts and comments.
TRUTH = """
SELECT p.id, p.title, count(c.id)::int AS comments_count
FROM posts p LEFT JOIN comments c ON c.post_id = p.id GROUP BY 1, 2 ORDER BY 1
"""
DERIVED = "SELECT id, title, comments_count FROM post_with_comments_counts ORDER BY id"


def counts_operator(**changes: Any) -> dict[str, Any]:
    return {"name": NAME, "tables": {"public.posts": "id", "public.comments": "post_id"},
            "sql": MERGE, "delete_with": ["public.posts"],
            "target": {"table": "public.post_with_comments_counts", "key": "id"}, **changes}


def operator_config(dsn: str, **changes: Any) -> dict[str, Any]:
    """A config with the counts operator and nothing else (an operator is something to
    capture: no publisher or route needed)."""
    return {"postgres": {"dsn": dsn, "connect_timeout": 5},
            "operators": [counts_operator(**changes)]}


@pytest.fixture
async def tables(pg: asyncpg.Connection) -> None:
    await pg.execute(TABLES)


async def rows(pg: asyncpg.Connection, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await pg.fetch(sql)]


async def triggers_on(pg: asyncpg.Connection, table: str) -> list[str]:
    return [r["tgname"] for r in await pg.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal",
        table)]


# ---------------------------------------------------------------------------- validate


async def test_validate_checks_the_operators_sql_against_the_database(
        database: str, tables: None, tmp_path: Path) -> None:
    config = write_config(tmp_path, operator_config(database))
    result = await run("validate", "-c", config, cwd=tmp_path)
    assert result.code == 0, result
    assert result.stdout == (f"OK: {config} (0 publisher(s), 0 route(s), 2 table(s), "
                             "1 operator(s) checked against the database)\n"), result
    assert result.stderr == "", result
    assert not await schema_exists(database)  # checked, nothing written


async def test_validate_offline_does_not_connect(tmp_path: Path) -> None:
    # Port 1 answers nothing: without --offline, validate tries to connect and fails.
    dsn = with_port("postgresql://postgres@127.0.0.1/nowhere", 1)
    config = write_config(tmp_path, operator_config(dsn))
    offline = await run("validate", "--offline", "-c", config, cwd=tmp_path)
    assert offline.code == 0, offline
    assert offline.stdout == (f"OK: {config} (0 publisher(s), 0 route(s), 2 table(s), "
                              "1 operator(s))\n"), offline
    assert offline.stderr == "", offline

    online = await run("validate", "-c", config, cwd=tmp_path)
    assert online.code == EXIT_RUNTIME, online
    assert len(online.stderr_lines) == 1, online
    assert online.stderr_lines[0].startswith(
        "error: cannot connect to PostgreSQL at postgres@127.0.0.1:1/nowhere"), online
    assert online.stdout == "", online


# Each: the operator's changed keys, and the one error line validate prints for it.
BAD_SQL: dict[str, tuple[dict[str, Any], str]] = {
    "syntax-error": (
        {"sql": MERGE.replace("UPDATE SET", "UPDATE SETT")},
        'operators[0].sql: syntax error at or near "SETT" (line 4 of the SQL)'),
    "missing-table": (
        {"sql": MERGE.replace("FROM comments c", "FROM commentz c")},
        'operators[0].sql: relation "commentz" does not exist (line 2 of the SQL)'),
    "key-does-not-fit": (
        {"tables": {"public.posts": "id", "public.comments": "body"}},
        'operators[0].tables["public.comments"]: body is text, which does not fit the sql\'s '
        "$1 (integer)"),
    "missing-key-column": (
        {"tables": {"public.posts": "id", "public.comments": "post"}},
        "operators[0].tables[\"public.comments\"]: public.comments has no column 'post'"),
    "missing-key-table": (
        {"tables": {"public.posts": "id", "public.comment": "post_id"}},
        'operators[0].tables["public.comment"]: table public.comment does not exist'),
    "two-parameters": (
        {"sql": MERGE.replace("p.id = $1", "p.id = $1 AND p.title <> $2")},
        "operators[0].sql: expected one parameter, $1 (the key); it has 2"),
    "unsupported-key-type": (
        {"sql": "SELECT $1::point"},
        "operators[0].sql: $1 is point, which an operator key cannot be (one of: bool, "
        "bpchar, citext, date, float4, float8, int2, int4, int8, name, numeric, oid, text, "
        "timestamp, timestamptz, uuid, varchar)"),
    "missing-target": (
        {"target": {"table": "public.counts", "key": "id"}},
        "operators[0].target.table: table public.counts does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_SQL))
async def test_validate_reports_an_operator_the_database_refuses(
        case: str, database: str, tables: None, tmp_path: Path) -> None:
    changes, message = BAD_SQL[case]
    config = write_config(tmp_path, operator_config(database, **changes))
    result = await run("validate", "-c", config, cwd=tmp_path)
    assert result.code == EXIT_CONFIG, result
    assert result.stderr_lines == [f"error: {message}"], result
    assert result.stdout == "", result
    assert not await schema_exists(database)


@pytest.mark.parametrize("case", ["syntax-error", "key-does-not-fit"])
async def test_install_with_a_bad_operator_installs_nothing(
        case: str, database: str, tables: None, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    changes, message = BAD_SQL[case]
    config = write_config(tmp_path, operator_config(database, **changes))
    result = await run("install", "-c", config, cwd=tmp_path)
    assert result.code == EXIT_CONFIG, result
    assert result.stderr_lines == [f"error: {message}"], result
    assert result.stdout == "", result
    assert not await schema_exists(database), result
    assert await triggers_on(pg, "public.posts") == []
    assert await triggers_on(pg, "public.comments") == []


# ---------------------------------------------------------------------------- rebuild


@pytest.fixture
async def existing_rows(pg: asyncpg.Connection, tables: None) -> None:
    """Rows made while nothing streamed, and a derived table that is wrong about them: a stale
    count, a stale title, a missing post and an orphan (its post is gone)."""
    await pg.execute("""
        INSERT INTO posts (id, title) VALUES (1, 'one'), (2, 'two'), (3, 'three'), (4, 'four'),
                                             (5, 'five');
        INSERT INTO comments (post_id, body) VALUES (1, 'a'), (1, 'b'), (1, 'c'), (3, 'd'),
                                                    (5, 'e'), (5, 'f'), (NULL, 'no post');
        INSERT INTO post_with_comments_counts VALUES (1, 'one', 99), (2, 'old title', 0),
                                                     (3, 'three', 1), (42, 'orphan', 7);
    """)


async def test_rebuild_recomputes_the_target_and_removes_orphans(
        database: str, existing_rows: None, pg: asyncpg.Connection, tmp_path: Path) -> None:
    config = write_config(tmp_path, operator_config(database))
    truth = await rows(pg, TRUTH)
    assert truth == [(1, "one", 3), (2, "two", 0), (3, "three", 1), (4, "four", 0),
                     (5, "five", 2)]
    assert await rows(pg, DERIVED) != truth

    # 5 keys in chunks of 2: three transactions, then the orphans.
    result = await run("operators", "rebuild", NAME, "-c", config, "--chunk", "2",
                       cwd=tmp_path)
    assert result.code == 0, result
    assert result.stdout == f"rebuilt {NAME}: 5 key(s)\n", result
    assert result.stderr == "", result  # (no progress bar off a terminal)
    assert await rows(pg, DERIVED) == truth  # row 42 (no such post) is gone

    # Again: the same keys, nothing to change.
    again = await run("operators", "rebuild", NAME, "-c", config, cwd=tmp_path)
    assert again.code == 0, again
    assert again.stdout == f"rebuilt {NAME}: 5 key(s)\n", again
    assert await rows(pg, DERIVED) == truth
    assert not await schema_exists(database)  # a rebuild installs nothing


async def test_rebuild_of_an_unknown_operator_names_the_defined_ones(
        database: str, existing_rows: None, pg: asyncpg.Connection, tmp_path: Path) -> None:
    config = write_config(tmp_path, operator_config(database))
    before = await rows(pg, DERIVED)
    result = await run("operators", "rebuild", "post_counts", "-c", config, cwd=tmp_path)
    assert result.code == EXIT_CONFIG, result
    assert result.stderr_lines == [
        f"error: operators: no operator named 'post_counts' (defined: {NAME})"], result
    assert result.stdout == "", result
    assert await rows(pg, DERIVED) == before


async def test_rebuild_with_a_bad_operator_writes_nothing(
        database: str, existing_rows: None, pg: asyncpg.Connection, tmp_path: Path) -> None:
    changes, message = BAD_SQL["syntax-error"]
    config = write_config(tmp_path, operator_config(database, **changes))
    before = await rows(pg, DERIVED)
    result = await run("operators", "rebuild", NAME, "-c", config, cwd=tmp_path)
    assert result.code == EXIT_CONFIG, result
    assert result.stderr_lines == [f"error: {message}"], result
    assert await rows(pg, DERIVED) == before


async def test_rebuild_with_no_keys_says_so(
        database: str, tables: None, pg: asyncpg.Connection, tmp_path: Path) -> None:
    await pg.execute("INSERT INTO post_with_comments_counts VALUES (7, 'orphan', 1)")
    config = write_config(tmp_path, operator_config(database))
    result = await run("operators", "rebuild", NAME, "-c", config, cwd=tmp_path)
    assert result.code == 0, result
    assert await rows(pg, DERIVED) == []  # the orphan is removed all the same
    assert result.stdout == f"rebuilt {NAME}: 0 key(s)\n", result


# ---------------------------------------------------------------------------- status


async def test_status_lists_the_operator(database: str, existing_rows: None,
                                         pg: asyncpg.Connection, tmp_path: Path) -> None:
    config = write_config(tmp_path, operator_config(database))
    installed = await run("install", "-c", config, cwd=tmp_path)
    assert installed.code == 0, installed
    assert installed.stdout.splitlines() == [
        "added: public.comments", "added: public.posts", "installed in schema 'pgconnector'"]
    rebuilt = await run("operators", "rebuild", NAME, "-c", config, cwd=tmp_path)
    assert rebuilt.code == 0, rebuilt
    assert await rows(pg, DERIVED) == await rows(pg, TRUTH)

    result = await run("status", "-c", config, cwd=tmp_path)
    assert result.code == 0, result
    lines = result.stdout.splitlines()
    # The daemon never ran: nothing applied, nothing failed.
    assert f"operator {NAME}: nothing applied yet; 0 dead letter(s), 0 waiting to retry" \
        in lines, result
    assert [line for line in lines if line.startswith("operator ")] == [
        f"operator {NAME}: nothing applied yet; 0 dead letter(s), 0 waiting to retry"]
    assert "  public.posts: delete, insert, truncate, update" in lines
    assert "  public.comments: delete, insert, truncate, update" in lines

    as_json = await run("status", "--json", "-c", config, cwd=tmp_path)
    assert as_json.code == 0, as_json
    assert json.loads(as_json.stdout)["operators"] == [
        {"name": NAME, "position": None, "last_event_id": None, "changes": 0,
         "applied_at": None, "dead_letters": 0, "parked": 0}]
