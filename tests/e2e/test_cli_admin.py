"""install / status / uninstall through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.support import make_config, run, schema_exists, write_config

ROUTES = [
    {"table": "public.items", "publisher": "cache", "channel": "e2e:{table}:{op}"},
    {"table": "public.other", "operations": ["insert"], "publisher": "cache",
     "channel": "e2e:other"},
]


@pytest.fixture
async def tables(pg: asyncpg.Connection) -> None:
    await pg.execute("CREATE TABLE public.items (id int PRIMARY KEY, name text);"
                     "CREATE TABLE public.other (id int PRIMARY KEY);"
                     "INSERT INTO public.items VALUES (1, 'kept'), (2, 'kept too')")


@pytest.fixture
def config(database: str, redis_url: str, tmp_path: Path) -> Path:
    return write_config(tmp_path, make_config(database, redis_url=redis_url, routes=ROUTES))


async def triggers_on(pg: asyncpg.Connection, table: str) -> list[str]:
    return [r["tgname"] for r in await pg.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal "
        "ORDER BY tgname", table)]


async def test_install_twice_second_has_nothing_to_change(
        config: Path, pg: asyncpg.Connection, tables: None, database: str) -> None:
    first = await run("install", "-c", config)
    assert first.code == 0, first
    assert "added: public.items" in first.stdout
    assert "added: public.other" in first.stdout
    assert "nothing to change" not in first.stdout
    assert await triggers_on(pg, "public.items")
    assert await triggers_on(pg, "public.other")

    second = await run("install", "-c", config)
    assert second.code == 0, second
    assert second.stdout.splitlines() == [
        "unchanged: public.items",
        "unchanged: public.other",
        "installed in schema 'pgconnector' (nothing to change)",
    ], second
    assert await schema_exists(database)


async def test_install_reconciles_a_changed_config(config: Path, pg: asyncpg.Connection,
                                                   tables: None, tmp_path: Path,
                                                   database: str, redis_url: str) -> None:
    assert (await run("install", "-c", config)).code == 0
    narrower = write_config(tmp_path, make_config(database, redis_url=redis_url, routes=[
        {**ROUTES[0], "operations": ["insert", "update"]}]), name="narrower.yaml")
    result = await run("install", "-c", narrower)
    assert result.code == 0, result
    assert "changed: public.items" in result.stdout
    assert "removed: public.other" in result.stdout
    assert await triggers_on(pg, "public.other") == []
    assert sorted(await triggers_on(pg, "public.items")) == [  # no delete/truncate any more
        "pgconnector_insert_v1", "pgconnector_update_v1"]


async def test_status_shows_tables_backlog_and_no_consumer(
        config: Path, pg: asyncpg.Connection, tables: None) -> None:
    before = await run("status", "-c", config)
    assert before.code == 1, before
    assert "not installed" in before.stdout

    assert (await run("install", "-c", config)).code == 0
    result = await run("status", "-c", config)
    assert result.code == 0, result
    lines = result.stdout.splitlines()
    assert lines[0].startswith("schema 'pgconnector' (version "), result
    assert "  public.items: delete, insert, truncate, update" in lines
    assert "  public.other: insert" in lines
    assert "backlog: 0 change(s)" in lines
    assert "dead letters: 0" in lines
    assert "active consumer: none" in lines

    await pg.execute("INSERT INTO public.items VALUES (3, 'c'), (4, 'd')")
    result = await run("status", "-c", config)
    assert result.code == 0, result
    backlog = next(line for line in result.stdout.splitlines() if line.startswith("backlog:"))
    assert backlog.startswith("backlog: 2 change(s), oldest "), backlog

    as_json = await run("status", "--json", "-c", config)
    assert as_json.code == 0, as_json
    info = json.loads(as_json.stdout)
    assert info["installed"] is True
    assert info["backlog"]["pending"] == 2
    assert info["active_consumer"] is None
    assert {t["table"] for t in info["tables"]} == {"public.items", "public.other"}
    assert all(t["triggers_present"] for t in info["tables"])


async def test_status_flags_missing_triggers(config: Path, pg: asyncpg.Connection,
                                             tables: None) -> None:
    assert (await run("install", "-c", config)).code == 0
    for name in await triggers_on(pg, "public.other"):
        await pg.execute(f'DROP TRIGGER "{name}" ON public.other')
    result = await run("status", "-c", config)
    assert "public.other: insert  [TRIGGERS MISSING: run install]" in result.stdout, result
    repaired = await run("install", "-c", config)
    assert "changed: public.other" in repaired.stdout, repaired
    assert await triggers_on(pg, "public.other")


async def test_uninstall_removes_schema_and_keeps_user_data(
        config: Path, pg: asyncpg.Connection, tables: None, database: str) -> None:
    assert (await run("install", "-c", config)).code == 0
    result = await run("uninstall", "-c", config)
    assert result.code == 0, result
    assert "removed triggers: public.items" in result.stdout
    assert "uninstalled schema 'pgconnector'" in result.stdout
    assert not await schema_exists(database)
    assert await triggers_on(pg, "public.items") == []
    assert await triggers_on(pg, "public.other") == []
    rows = await pg.fetch("SELECT id, name FROM public.items ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, "kept"), (2, "kept too")]
    # Writes still work without the capture function.
    await pg.execute("INSERT INTO public.items VALUES (5, 'after')")

    again = await run("uninstall", "-c", config)
    assert again.code == 0, again  # nothing installed: nothing to do, not an error


async def test_uninstall_refuses_with_backlog_unless_forced(
        config: Path, pg: asyncpg.Connection, tables: None, database: str) -> None:
    assert (await run("install", "-c", config)).code == 0
    await pg.execute("INSERT INTO public.items VALUES (3, 'pending')")

    refused = await run("uninstall", "-c", config)
    assert refused.code == 1, refused
    assert len(refused.stderr_lines) == 1, refused
    assert refused.stderr_lines[0].startswith("error: 1 captured change(s)"), refused
    assert "--force" in refused.stderr
    assert await schema_exists(database)
    assert await triggers_on(pg, "public.items"), "refused uninstall dropped triggers"
    assert await pg.fetchval("SELECT count(*) FROM pgconnector.outbox") == 1

    forced = await run("uninstall", "--force", "-c", config)
    assert forced.code == 0, forced
    assert not await schema_exists(database)
    assert await pg.fetchval("SELECT count(*) FROM public.items") == 3
