"""The connector's own tables change only through the numbered migrations in sql/migrations/
(connector/store/install.py `migrate`). Built one migration at a time, or upgraded from what an
older release installed, a database must end as a fresh install: the same catalog (pg_dump
--schema-only of the whole database: columns, defaults, constraints, indexes, functions,
triggers, privileges) and the rows it held.

legacy_install/<n>_<commit>.sql are verbatim copies of `git show <commit>:sql/install.sql` for
the 7 commits that changed it before migrations, oldest first (checked below when the history
is at hand); each made schema_version '1'.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from connector import resources
from connector.config import from_dict as config_from_dict
from connector.db import DatabaseError
from connector.store.install import install, migrate, migrations, status
from connector.store.queries import Queries
from connector.vocabulary import Config, quote_ident
from tests.conftest import temp_database
from tests.integration.helpers import make_config

ROOT = Path(__file__).resolve().parents[2]
LEGACY = Path(__file__).parent / "legacy_install"
RELEASES = sorted(LEGACY.glob("*.sql"), key=lambda p: int(p.name.partition("_")[0]))
SCHEMA = "pgconnector"
ITEMS = "CREATE TABLE public.items (id int PRIMARY KEY, v text)"
Rows = dict[str, list[Any]]


def config(url: str, schema: str = SCHEMA) -> Config:
    return config_from_dict(make_config(url, "redis://127.0.0.1:6379/0",
                                        [{"table": "items", "publisher": "cache", "channel": "x"}],
                                        schema=schema))


def pg_dump() -> str:
    """PG_DUMP, the one on PATH, or the newest of Debian's /usr/lib/postgresql/<major>/bin."""
    found = os.environ.get("PG_DUMP") or shutil.which("pg_dump")
    if found:
        return found
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"),
                    key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if not debian:
        pytest.skip("pg_dump is not installed")
    return str(debian[-1])


def catalog(url: str) -> str:
    """The database's schema as pg_dump prints it, without what differs between any two dumps
    (its comments, and the random key of \\restrict)."""
    out = subprocess.run([pg_dump(), "--schema-only", "--dbname", url], capture_output=True,
                         text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines()
                     if line and not line.startswith(("--", "\\restrict", "\\unrestrict")))


async def fresh_catalog(admin_url: str, schema: str = SCHEMA) -> str:
    """The catalog of a fresh install by this release, in a database of its own."""
    async with temp_database(admin_url) as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(ITEMS)
            await install(conn, config(url, schema))
        finally:
            await conn.close()
        return catalog(url)


def assert_same(got: str, fresh: str) -> None:
    diff = list(difflib.unified_diff(fresh.splitlines(), got.splitlines(), "fresh install",
                                     "migrated", lineterm=""))
    assert not diff, "\n".join(diff)


def legacy_sql(release: Path, schema: str = SCHEMA) -> str:
    """An old install.sql with its one placeholder filled as connector/store/queries.py
    `load` does."""
    return release.read_text().replace("{schema}", quote_ident(schema))


async def columns(conn: asyncpg.Connection, schema: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for r in await conn.fetch("SELECT table_name, column_name FROM information_schema.columns "
                              "WHERE table_schema = $1", schema):
        found.setdefault(r["table_name"], set()).add(r["column_name"])
    return found


async def plant(conn: asyncpg.Connection, schema: str, tag: int) -> Rows:
    """A row in each of the connector's tables that exists now, in whatever layout they have;
    returns them as `rows` must read them once migrated."""
    s, have = quote_ident(schema), await columns(conn, schema)
    old, new = {"id": tag, "v": "old"}, {"id": tag, "v": "n\u00e9w \u2713", "n": 1.50, "a": [1]}
    await conn.execute(f"INSERT INTO {s}.meta VALUES ($1, 'kept')", f"note {tag}")
    await conn.execute(f"INSERT INTO {s}.installed_tables (table_schema, table_name, relid, "
                       "operations, config_hash) VALUES ('public', 'items', "
                       "'public.items'::regclass, '{insert}', 'old') ON CONFLICT DO NOTHING")
    await conn.execute(f"INSERT INTO {s}.outbox (txid, captured_at, relid, op, old_row, new_row)"
                       " VALUES (pg_current_xact_id(), now(), 'public.items'::regclass, 'u', "
                       "$1, $2)", json.dumps(old), json.dumps(new))
    retry = "name" in have["dead_letters"]
    await conn.execute(
        f"INSERT INTO {s}.dead_letters (event_id, table_schema, table_name, op, publisher, "
        "channel, payload, error, attempts" + (", name, key_columns" if retry else "") + ") "
        "VALUES ($1, 'public', 'items', 'insert', 'cache', 'x', $2, 'down', 3"
        + (", 'msg', '{id}'" if retry else "") + ")", f"dead {tag}", json.dumps(new))
    planted: Rows = {
        "meta": [(f"note {tag}", "kept")],
        "outbox": [("u", old, new)],
        "dead_letters": [(f"dead {tag}", new, "msg" if retry else "", ["id"] if retry else [])]}
    if "parked" in have:
        route = "route" in have["parked"]
        await conn.execute(
            f"INSERT INTO {s}.parked (publisher, channel, name, message_id, table_schema, "
            "table_name, op, key_columns, payload" + (", route" if route else "") + ") "
            "VALUES ('cache', 'x', 'm', $1, 'public', 'items', 'insert', '{id}', $2"
            + (", 7" if route else "") + ")", f"parked {tag}", json.dumps(new))
        planted["parked"] = [(f"parked {tag}", new, 7 if route else -1)]
    return planted


async def rows(conn: asyncpg.Connection, schema: str) -> Rows:
    """What the connector's tables hold, in this release's layout (meta without the keys
    install writes)."""
    s = quote_ident(schema)
    loads = lambda text: None if text is None else json.loads(text)  # noqa: E731
    return {
        "meta": [(r["key"], r["value"]) for r in await conn.fetch(
            f"SELECT key, value FROM {s}.meta WHERE key NOT IN ('schema_version', 'source') "
            "ORDER BY key")],
        "outbox": [(r["op"].decode(), loads(r["old_row"]), loads(r["new_row"]))
                   for r in await conn.fetch(f"SELECT * FROM {s}.outbox ORDER BY id")],
        "dead_letters": [(r["event_id"], loads(r["payload"]), r["name"], r["key_columns"])
                         for r in await conn.fetch(f"SELECT * FROM {s}.dead_letters ORDER BY id")],
        "parked": [(r["message_id"], loads(r["payload"]), r["route"])
                   for r in await conn.fetch(f"SELECT * FROM {s}.parked ORDER BY id")],
        "installed_tables": [tuple(r) for r in await conn.fetch(
            f"SELECT table_schema, table_name, prior_identity FROM {s}.installed_tables")],
    }


def add(into: Rows, planted: Rows) -> None:
    for table, found in planted.items():
        into.setdefault(table, []).extend(found)


def test_migrations_are_numbered_and_only_they_change_tables() -> None:
    found = migrations()  # refuses gaps and duplicates
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "0001_initial"
    assert set(resources.sql_names("migrations")) >= {f"{m.name}.sql" for m in found}
    reapplied = resources.sql_text("install.sql")
    assert not re.search(r"\b(CREATE|ALTER|DROP)\s+(TABLE|INDEX|SCHEMA)\b", reapplied, re.I)


def test_legacy_fixtures_are_the_install_sql_of_their_commits() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    assert len(RELEASES) == 7
    for release in RELEASES:
        commit = release.stem.partition("_")[2]
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:sql/install.sql"],
                               capture_output=True, text=True)
        if shown.returncode != 0:
            pytest.skip(f"commit {commit} is not in this clone's history")
        assert shown.stdout == release.read_text(), release.name


async def test_each_migration_in_turn_ends_as_a_fresh_install(
        pg_admin_url: str, database: str, pg: asyncpg.Connection) -> None:
    schema = 'cdc "odd"; schema'  # every statement must quote it
    q = Queries(schema)
    await pg.execute(ITEMS)
    expected: Rows = {}
    for m in migrations():
        async with pg.transaction():
            await pg.execute(q.get("install_lock"))
            assert await migrate(pg, q, upto=m.version) == [m.name]
        assert await pg.fetchval(q.get("meta_get"), "schema_version") == str(m.version)
        add(expected, await plant(pg, schema, m.version))
    async with pg.transaction():
        assert await migrate(pg, q) == []
    assert (await install(pg, config(database, schema))).changed == ["public.items"]
    assert (await status(pg, schema))["schema_version"] == str(migrations()[-1].version)
    assert await rows(pg, schema) == {**expected, "installed_tables": [("public", "items", None)]}
    assert_same(catalog(database), await fresh_catalog(pg_admin_url, schema))


def release_chains() -> list[Any]:
    """Each release's install.sql alone, and run after every release before it (as users who
    upgraded release by release have it, the changes made in place)."""
    chains = []
    for i, release in enumerate(RELEASES):
        chains.append(pytest.param(RELEASES[i:i + 1], id=release.stem))
        if i:
            chains.append(pytest.param(RELEASES[:i + 1], id=f"{release.stem}-upgraded"))
    return chains


@pytest.mark.parametrize("releases", release_chains())
async def test_an_older_releases_install_upgrades_to_a_fresh_install(
        pg_admin_url: str, database: str, pg: asyncpg.Connection, releases: list[Path]) -> None:
    await pg.execute(ITEMS)
    expected: Rows = {}
    for i, release in enumerate(releases):
        await pg.execute(legacy_sql(release))
        if i in (0, len(releases) - 1):  # rows in the first layout and in the last
            add(expected, await plant(pg, SCHEMA, i))
    assert await pg.fetchval("SELECT value FROM pgconnector.meta "
                             "WHERE key = 'schema_version'") == "1"

    assert (await install(pg, config(database))).changed == ["public.items"]
    assert (await status(pg, SCHEMA))["schema_version"] == str(migrations()[-1].version)
    assert await rows(pg, SCHEMA) == {"parked": [], **expected,
                                      "installed_tables": [("public", "items", None)]}
    assert_same(catalog(database), await fresh_catalog(pg_admin_url))
    assert (await install(pg, config(database))).unchanged == ["public.items"]


async def test_a_schema_from_a_newer_release_is_refused(
        database: str, pg: asyncpg.Connection) -> None:
    await pg.execute(ITEMS)
    await install(pg, config(database))
    newer = migrations()[-1].version + 1
    await pg.execute("UPDATE pgconnector.meta SET value = $1 WHERE key = 'schema_version'",
                     str(newer))
    before = catalog(database)
    with pytest.raises(DatabaseError) as exc:
        await install(pg, config(database))
    assert str(exc.value) == (
        f"schema 'pgconnector' is at version {newer}, made by a newer pgconnector (this one "
        f"knows up to {newer - 1}): run that release or a later one; schemas are never "
        "downgraded")
    assert catalog(database) == before
    assert (await status(pg, SCHEMA))["schema_version"] == str(newer)


async def test_a_layout_no_release_made_is_refused(
        database: str, pg: asyncpg.Connection) -> None:
    """Migration 0005's column on the first layout: guessing a version could skip 0002-0004."""
    await pg.execute(legacy_sql(RELEASES[0]))
    await pg.execute("ALTER TABLE pgconnector.installed_tables ADD COLUMN prior_identity text")
    await pg.execute(ITEMS)
    with pytest.raises(DatabaseError, match=r"changes of migrations \[5\] only"):
        await install(pg, config(database))
    assert await pg.fetchval("SELECT to_regclass('pgconnector.parked')") is None
