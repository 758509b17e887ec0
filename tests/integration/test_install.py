"""install / reconcile / uninstall against a real database."""

from __future__ import annotations

import asyncpg
import pytest

from connector.config import from_dict as config_from_dict
from connector.store.install import BacklogNotEmpty, install, status, uninstall
from connector.vocabulary import Config, ConfigError
from tests.integration.helpers import make_config


async def triggers(pg: asyncpg.Connection) -> set[tuple[str, str]]:
    rows = await pg.fetch("SELECT tgrelid::regclass::text AS t, tgname FROM pg_trigger "
                          "WHERE NOT tgisinternal")
    return {(r["t"], r["tgname"]) for r in rows}


@pytest.fixture
async def tables(pg: asyncpg.Connection) -> None:
    await pg.execute("CREATE TABLE a (id int PRIMARY KEY, v text)")
    await pg.execute("CREATE TABLE b (id int PRIMARY KEY, v text)")
    await pg.execute("INSERT INTO a VALUES (1, 'keep'); INSERT INTO b VALUES (1, 'keep')")


def cfg(database: str, routes: list[dict[str, object]]) -> Config:
    return config_from_dict(make_config(database, "redis://127.0.0.1:6379/0", routes))


async def test_install_is_idempotent_and_reconciles(
        database: str, pg: asyncpg.Connection, tables: None) -> None:
    both = cfg(database, [{"table": "a", "publisher": "cache", "channel": "x"},
                          {"table": "b", "publisher": "cache", "channel": "y",
                           "operations": ["insert"]}])
    report = await install(pg, both)
    assert report.added == ["public.a", "public.b"]
    assert await triggers(pg) == {("a", "pgconnector_insert_v1"), ("a", "pgconnector_update_v1"),
                                  ("a", "pgconnector_delete_v1"), ("a", "pgconnector_truncate_v1"),
                                  ("b", "pgconnector_insert_v1")}
    again = await install(pg, both)
    assert not again.touched and again.unchanged == ["public.a", "public.b"]

    # b removed from the config: exactly its trigger goes, a's stay, data untouched
    only_a = cfg(database, [{"table": "a", "publisher": "cache", "channel": "x"}])
    report = await install(pg, only_a)
    assert report.removed == ["public.b"] and report.unchanged == ["public.a"]
    assert await triggers(pg) == {("a", "pgconnector_insert_v1"), ("a", "pgconnector_update_v1"),
                                  ("a", "pgconnector_delete_v1"), ("a", "pgconnector_truncate_v1")}
    assert await pg.fetchval("SELECT v FROM b WHERE id = 1") == "keep"

    # operations changed: triggers are rebuilt to match
    a_insert = cfg(database, [{"table": "a", "publisher": "cache", "channel": "x",
                               "operations": ["insert", "update"]}])
    assert (await install(pg, a_insert)).changed == ["public.a"]
    assert await triggers(pg) == {("a", "pgconnector_insert_v1"), ("a", "pgconnector_update_v1")}
    tgdef = await pg.fetchval("SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                              "WHERE tgname = 'pgconnector_update_v1'")
    assert "AFTER UPDATE ON public.a FOR EACH ROW EXECUTE" in tgdef

    # a trigger dropped by hand is put back
    await pg.execute('DROP TRIGGER pgconnector_update_v1 ON a')
    assert (await install(pg, a_insert)).changed == ["public.a"]
    assert ("a", "pgconnector_update_v1") in await triggers(pg)


async def test_uninstall_removes_everything_and_keeps_user_data(
        database: str, pg: asyncpg.Connection, tables: None) -> None:
    config = cfg(database, [{"table": "a", "publisher": "cache", "channel": "x"}])
    await install(pg, config)
    await pg.execute("INSERT INTO a VALUES (2, 'captured')")
    with pytest.raises(BacklogNotEmpty):
        await uninstall(pg, "pgconnector")
    assert await uninstall(pg, "pgconnector", force=True) == ["public.a"]
    assert await triggers(pg) == set()
    assert await pg.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgconnector'") == 0
    assert await pg.fetch("SELECT id, v FROM a ORDER BY id") == [(1, "keep"), (2, "captured")]
    assert (await status(pg, "pgconnector")) == {"schema": "pgconnector", "installed": False}
    assert await uninstall(pg, "pgconnector") == []  # nothing left: a no-op


async def test_uninstall_keeps_a_schema_holding_user_objects(
        database: str, pg: asyncpg.Connection, tables: None) -> None:
    await install(pg, cfg(database, [{"table": "a", "publisher": "cache", "channel": "x"}]))
    await pg.execute("CREATE TABLE pgconnector.mine (x int)")
    await uninstall(pg, "pgconnector")
    assert await pg.fetchval("SELECT count(*) FROM pgconnector.mine") == 0


async def test_missing_table_is_a_config_error_and_installs_nothing(
        database: str, pg: asyncpg.Connection, tables: None) -> None:
    config = cfg(database, [{"table": "a", "publisher": "cache", "channel": "x"},
                            {"table": "nope.missing", "publisher": "cache", "channel": "x"}])
    with pytest.raises(ConfigError) as exc:
        await install(pg, config)
    assert exc.value.problems == ["routes[1].table: table nope.missing does not exist"]
    assert await pg.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgconnector'") == 0
    assert await triggers(pg) == set()


async def test_hostile_names_install_and_uninstall(database: str, pg: asyncpg.Connection) -> None:
    await pg.execute('CREATE SCHEMA "My Schema"')
    await pg.execute('CREATE TABLE "My Schema"."Order ""Items""; drop" (id int PRIMARY KEY)')
    config = config_from_dict(make_config(
        database, "redis://127.0.0.1:6379/0",
        [{"table": '"My Schema"."Order ""Items""; drop"', "publisher": "cache", "channel": "x"}],
        schema='cdc "odd"; schema'))
    assert len((await install(pg, config)).added) == 1
    await pg.execute('INSERT INTO "My Schema"."Order ""Items""; drop" VALUES (1)')
    assert await pg.fetchval('SELECT count(*) FROM "cdc ""odd""; schema".outbox') == 1
    await uninstall(pg, 'cdc "odd"; schema', force=True)
    assert await triggers(pg) == set()
    assert await pg.fetchval('SELECT count(*) FROM "My Schema"."Order ""Items""; drop"') == 1


async def test_capture_ignores_a_hostile_search_path(database: str, pg: asyncpg.Connection) -> None:
    """The capture function is SECURITY DEFINER without SET search_path: every name in it must
    be qualified, or a writer could make it run their own functions with the owner's rights."""
    await pg.execute("CREATE TABLE a (id int PRIMARY KEY, v text)")
    await install(pg, cfg(database, [{"table": "a", "publisher": "cache", "channel": "x"}]))
    await pg.execute("""
        CREATE SCHEMA evil;
        CREATE TABLE evil.calls (what text);
        CREATE FUNCTION evil.to_jsonb(anyelement) RETURNS jsonb LANGUAGE sql
            AS $$ INSERT INTO evil.calls VALUES ('to_jsonb') RETURNING '{"evil": true}'::jsonb $$;
        CREATE FUNCTION evil.pg_current_xact_id() RETURNS xid8 LANGUAGE sql
            AS $$ INSERT INTO evil.calls VALUES ('xid') RETURNING '1'::xid8 $$;
        CREATE FUNCTION evil.texteq_evil(text, text) RETURNS boolean LANGUAGE sql
            AS $$ INSERT INTO evil.calls VALUES ('=') RETURNING true $$;
        CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.texteq_evil);
        CREATE TABLE evil.outbox (LIKE pgconnector.outbox);
    """)
    async with pg.transaction():
        await pg.execute("SET LOCAL search_path = evil, pg_catalog, public")
        await pg.execute("INSERT INTO public.a VALUES (1, 'x')")
        await pg.execute("UPDATE public.a SET v = 'y'")
        await pg.execute("DELETE FROM public.a")
    rows = await pg.fetch("SELECT op, new_row, old_row FROM pgconnector.outbox ORDER BY id")
    assert [(r["op"], r["new_row"], r["old_row"]) for r in rows] == [
        (b"i", '{"id":1,"v":"x"}', None),
        (b"u", '{"id":1,"v":"y"}', '{"id":1,"v":"x"}'),
        (b"d", None, '{"id":1,"v":"y"}')]
    assert await pg.fetchval("SELECT count(*) FROM evil.calls") == 0
    assert await pg.fetchval("SELECT count(*) FROM evil.outbox") == 0
