"""Security (issue 5): the connector runs with the least privileges README's "Database
privileges" lists, and no secret shows in anything it prints or serves.

Roles are cluster-wide: each test makes its own, with unique names, and drops them afterwards
(also when it fails). The test server trusts every role (a password in a DSN is accepted and
ignored), so these tests are about authorisation - which role may do what - not about
authentication.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from connector.store.queries import Queries, load
from connector.vocabulary import quote_ident
from tests.ably_endpoint import AblyEndpoint
from tests.conftest import RedisSubscriber
from tests.e2e.support import (
    Daemon,
    Result,
    base_env,
    make_config,
    run,
    wait_until,
    with_password,
    with_port,
    write_config,
)
from tests.e2e.test_postgres_fields import PasswordRefusingServer
from tests.integration.helpers import free_port

MakeDaemon = Callable[..., Daemon]
FAST_RETRY = {"initial_backoff": 0.05, "max_backoff": 0.2}
STREAMER_APP = "pgconnector-security-e2e"

# What the streaming role is granted, one privilege at a time (README "Database privileges").
# test_every_streaming_privilege_is_needed shows each one is used.
STREAMING_PRIVILEGES: tuple[tuple[str, str], ...] = (
    ("USAGE", "SCHEMA pgconnector"),
    ("SELECT", "pgconnector.outbox"),
    ("DELETE", "pgconnector.outbox"),
    ("SELECT", "pgconnector.installed_tables"),
    ("SELECT", "pgconnector.meta"),
    ("SELECT", "pgconnector.parked"),
    ("INSERT", "pgconnector.parked"),
    ("UPDATE", "pgconnector.parked"),
    ("DELETE", "pgconnector.parked"),
    ("SELECT", "pgconnector.dead_letters"),
    ("INSERT", "pgconnector.dead_letters"),
)


# ---------------------------------------------------------------------------------- roles


@dataclass(frozen=True)
class Roles:
    owner: str  # owns the application's schema and table; cannot log in
    installer: str  # runs `pgconnector install`
    streamer: str  # runs `pgconnector start --no-install` and `status`
    app: str  # the application: writes its table, nothing else
    monitor: str  # reads `status`, nothing else

    @property
    def all(self) -> tuple[str, ...]:
        return (self.owner, self.installer, self.streamer, self.app, self.monitor)


async def drop_roles(admin: asyncpg.Connection, names: Sequence[str]) -> None:
    """End the roles' sessions, drop what they own and were granted in this database (and on
    the database itself), then the roles."""
    existing = [r["rolname"] for r in await admin.fetch(
        "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY ($1::text[])", list(names))]
    if not existing:
        return
    await admin.execute("SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog."
                        "pg_stat_activity WHERE usename = ANY ($1::text[])", existing)
    await admin.execute(f"DROP OWNED BY {', '.join(map(quote_ident, existing))} CASCADE")
    for name in existing:
        await admin.execute(f"DROP ROLE {quote_ident(name)}")


@pytest.fixture
async def roles(database: str) -> AsyncIterator[Roles]:
    tag = uuid.uuid4().hex[:10]
    made = Roles(*(f"pgc_sec_{tag}_{kind}"
                   for kind in ("owner", "installer", "streamer", "app", "monitor")))
    admin = await asyncpg.connect(database)
    try:
        for name in made.all:
            login = "NOLOGIN" if name == made.owner else "LOGIN"
            await admin.execute(f"CREATE ROLE {quote_ident(name)} {login}")
        yield made
    finally:
        try:
            await drop_roles(admin, made.all)
        finally:
            await admin.close()


def role_dsn(database: str, role: str) -> str:
    return with_password(database, f"pw-of-{role}", user=role)


async def prepare_database(pg: asyncpg.Connection, roles: Roles) -> str:
    """Nothing for PUBLIC; the application's table in its own schema, owned by ``owner``; the
    application role may write it (no SELECT: capture must not need the writer's). Returns
    the quoted database name."""
    db = quote_ident(await pg.fetchval("SELECT current_database()"))
    await pg.execute(f"""
        REVOKE ALL ON DATABASE {db} FROM PUBLIC;
        REVOKE ALL ON SCHEMA public FROM PUBLIC;
        CREATE SCHEMA app AUTHORIZATION {quote_ident(roles.owner)};
        CREATE TABLE app.items (id int PRIMARY KEY, name text NOT NULL);
        ALTER TABLE app.items OWNER TO {quote_ident(roles.owner)};
        GRANT CONNECT ON DATABASE {db} TO {quote_ident(roles.app)};
        GRANT USAGE ON SCHEMA app TO {quote_ident(roles.app)};
        GRANT INSERT, UPDATE, DELETE, TRUNCATE ON app.items TO {quote_ident(roles.app)};
    """)
    return db


def installer_grants(db: str, role: str) -> list[tuple[str, str]]:
    """(GRANT, what `install` says without it), in the order install needs them."""
    r = quote_ident(role)
    return [
        (f"GRANT CONNECT ON DATABASE {db} TO {r}",
         "refused the connection: permission denied for database"),
        (f"GRANT CREATE ON DATABASE {db} TO {r}", "permission denied for database"),
        (f"GRANT USAGE ON SCHEMA app TO {r}", "permission denied for schema app"),
        (f"GRANT TRIGGER ON app.items TO {r}", "permission denied for table items"),
    ]


async def grant_streamer(pg: asyncpg.Connection, database: str, db: str, roles: Roles,
                         role: str) -> None:
    """CONNECT from the database's owner; the rest from the install role, which owns the
    connector's objects."""
    await pg.execute(f"GRANT CONNECT ON DATABASE {db} TO {quote_ident(role)}")
    installer = await asyncpg.connect(role_dsn(database, roles.installer))
    try:
        for privilege, target in STREAMING_PRIVILEGES:
            await installer.execute(f"GRANT {privilege} ON {target} TO {quote_ident(role)}")
    finally:
        await installer.close()


async def install_as_installer(pg: asyncpg.Connection, database: str, db: str, roles: Roles,
                               config: Path) -> None:
    """Grant the install role what README lists, one privilege at a time, showing `install`
    fails without each; then install."""
    for grant, without in installer_grants(db, roles.installer):
        failed = await run("install", "-c", config)
        assert failed.code == 1 and without in failed.stderr, (grant, failed)
        await pg.execute(grant)
    installed = await run("install", "-c", config)
    assert installed.code == 0, installed
    assert "added: app.items" in installed.stdout, installed


# ------------------------------------------------------------------------------- Redis users


class RedisUser:
    """A Redis ACL user of the test's own (keys and channels under ``prefix`` only), so a
    publisher's URL carries a password the server checks; ``disable`` makes the server
    refuse it (and drops its connections), ``enable`` lets it in again."""

    def __init__(self, redis_url: str, prefix: str, password: str, enabled: bool = True) -> None:
        self.admin: Any = aioredis.Redis.from_url(redis_url)  # execute_command is untyped
        self.name = f"{prefix}-user"
        self.prefix = prefix
        self.password = password
        self.enabled = enabled
        parts = urlsplit(redis_url)
        netloc = (f"{quote(self.name)}:{quote(password)}@{parts.hostname or '127.0.0.1'}"
                  f":{parts.port or 6379}")
        self.url = urlunsplit(parts._replace(netloc=netloc))

    async def __aenter__(self) -> RedisUser:
        await self.admin.execute_command(
            "ACL", "SETUSER", self.name, "reset", "on" if self.enabled else "off",
            f">{self.password}", f"~{self.prefix}*", f"&{self.prefix}*", "+@all")
        return self

    async def enable(self) -> None:
        await self.admin.execute_command("ACL", "SETUSER", self.name, "on")

    async def disable(self) -> None:
        await self.admin.execute_command("ACL", "SETUSER", self.name, "off")
        await self.admin.execute_command("CLIENT", "KILL", "USER", self.name)

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.admin.execute_command("ACL", "DELUSER", self.name)
            async for key in self.admin.scan_iter(match=f"{self.prefix}*"):
                await self.admin.delete(key)
        finally:
            await self.admin.aclose()


def logged(daemon: Daemon, event: str, **fields: Any) -> bool:
    return any(r.get("event") == event and all(r.get(k) == v for k, v in fields.items())
               for r in daemon.log_records())


async def outbox_parked_dead(pg: asyncpg.Connection) -> tuple[int, dict[str, int], int]:
    row = await pg.fetchrow(
        "SELECT (SELECT count(*) FROM pgconnector.outbox) AS outbox, "
        "(SELECT count(*) FROM pgconnector.dead_letters) AS dead")
    assert row is not None
    parked = {r["publisher"]: r["n"] for r in await pg.fetch(
        "SELECT publisher, count(*) AS n FROM pgconnector.parked GROUP BY publisher")}
    return row["outbox"], parked, row["dead"]


# ---------------------------------------------------------------------- least privilege


async def test_least_privilege_install_stream_and_status(
        database: str, pg: asyncpg.Connection, roles: Roles, redis_url: str,
        channel_prefix: str, subscriber: RedisSubscriber, daemons: MakeDaemon,
        tmp_path: Path) -> None:
    db = await prepare_database(pg, roles)
    admin_redis = aioredis.Redis.from_url(redis_url)
    wrongtype_key = f"{channel_prefix}:wrongtype"
    await admin_redis.set(wrongtype_key, "a string, so XADD fails with WRONGTYPE")
    try:
        async with RedisUser(redis_url, channel_prefix, secrets.token_hex(8),
                             enabled=False) as later:
            await stream_as_least_privileged_roles(
                database, pg, db, roles, redis_url, channel_prefix, subscriber, daemons,
                tmp_path, later, admin_redis)
    finally:
        await admin_redis.delete(wrongtype_key)
        await admin_redis.aclose()


def least_privilege_config(dsn: str, redis_url: str, prefix: str, later_url: str,
                           truncate: bool = True) -> dict[str, Any]:
    """Every path the daemon has: direct delivery (cache), a publisher that is down and comes
    back (later: parked, drained), one that never does (doomed: parked, then out of attempts),
    and one that rejects for good (wrongtype: dead letters straight from the claim)."""
    cache_ops = ["insert", "update", "delete", *(["truncate"] if truncate else [])]
    data = make_config(
        dsn,
        publishers={
            "cache": {"type": "redis", "url": redis_url},
            "later": {"type": "redis", "url": later_url, "mode": "stream", "timeout": 1,
                      "retry": FAST_RETRY},
            "doomed": {"type": "redis", "url": f"redis://127.0.0.1:{free_port()}/0",
                       "timeout": 1, "retry": {**FAST_RETRY, "max_attempts": 6}},
            "wrongtype": {"type": "redis", "url": redis_url, "mode": "stream"},
        },
        routes=[
            {"table": "app.items", "publisher": "cache", "channel": f"{prefix}:items",
             "operations": cache_ops},
            {"table": "app.items", "publisher": "later", "channel": f"{prefix}:later",
             "operations": ["update"]},
            {"table": "app.items", "publisher": "doomed", "channel": f"{prefix}:doomed",
             "operations": ["delete"]},
            {"table": "app.items", "publisher": "wrongtype", "channel": f"{prefix}:wrongtype",
             "operations": ["insert"]},
        ])
    data["postgres"]["application_name"] = STREAMER_APP
    return data


async def stream_as_least_privileged_roles(
        database: str, pg: asyncpg.Connection, db: str, roles: Roles, redis_url: str,
        prefix: str, subscriber: RedisSubscriber, daemons: MakeDaemon, tmp_path: Path,
        later: RedisUser, admin_redis: aioredis.Redis) -> None:
    def config_for(role: str, name: str, **kw: Any) -> Path:
        return write_config(tmp_path, least_privilege_config(
            role_dsn(database, role), redis_url, prefix, later.url, **kw), name=name)

    install_config = config_for(roles.installer, "install.yaml")
    stream_config = config_for(roles.streamer, "stream.yaml")

    # 1. Install as a role that owns no table: CONNECT, CREATE on the database, USAGE on the
    #    table's schema, TRIGGER on the table. Each is needed (install fails without it).
    await install_as_installer(pg, database, db, roles, install_config)
    owner = await pg.fetchval("SELECT proowner::regrole::text FROM pg_catalog.pg_proc "
                              "WHERE oid = 'pgconnector.capture_v1()'::regprocedure")
    assert owner == roles.installer  # the install role's rights are what the trigger has
    assert await pg.fetchval("SELECT prosecdef FROM pg_catalog.pg_proc "
                             "WHERE oid = 'pgconnector.capture_v1()'::regprocedure")
    # The application needs nothing of the connector, not even EXECUTE on the trigger function.
    installer = await asyncpg.connect(role_dsn(database, roles.installer))
    try:
        await installer.execute("REVOKE EXECUTE ON FUNCTION pgconnector.capture_v1() FROM PUBLIC")
    finally:
        await installer.close()

    # 2. The streaming role: exactly STREAMING_PRIVILEGES (and CONNECT), nothing on app.
    without = await run("status", "-c", stream_config)
    assert without.code == 1, without
    assert "refused the connection: permission denied for database" in without.stderr, without
    await grant_streamer(pg, database, db, roles, roles.streamer)
    status = await run("status", "-c", stream_config)
    assert status.code == 0, status
    assert "app.items: " in status.stdout and "active consumer: none" in status.stdout, status

    # 3. The application role has nothing on the connector's schema, nor SELECT on its table.
    app = await asyncpg.connect(role_dsn(database, roles.app))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="schema pgconnector"):
            await app.fetch("SELECT * FROM pgconnector.outbox")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="table items"):
            await app.fetch("SELECT * FROM app.items")

        active = await daemons(stream_config, tmp_path, args=["--no-install"]).start()
        await active.wait_active()
        standby = await daemons(stream_config, tmp_path, args=["--no-install"]).start()
        await standby.wait_for_log("consumer_standby")  # reads the active one's session

        async with subscriber:
            await app.execute("INSERT INTO app.items VALUES (1, 'a'), (2, 'b')")
            await app.execute("INSERT INTO app.items VALUES (3, 'c')")
            await app.execute("UPDATE app.items SET name = 'renamed'")  # no column read
            await app.execute("DELETE FROM app.items")
            await app.execute("INSERT INTO app.items VALUES (4, 'd')")
            await app.execute("TRUNCATE app.items")
            messages = await subscriber.wait_for(11, timeout=20)
    finally:
        await app.close()

    got = [(e["op"], (e["new"] or e["old"] or {}).get("id")) for _, e in messages]
    assert len(got) == 11, got
    assert got[:3] == [("insert", 1), ("insert", 2), ("insert", 3)]
    assert sorted(got[3:6]) == [("update", 1), ("update", 2), ("update", 3)]
    assert all(e["new"]["name"] == "renamed" for _, e in messages[3:6])
    assert sorted(got[6:9]) == [("delete", 1), ("delete", 2), ("delete", 3)]
    assert got[9:] == [("insert", 4), ("truncate", None)]

    # later's updates wait in `parked` while its Redis user is refused; doomed's deletes run
    # out of attempts; wrongtype's inserts are dead letters at once.
    async def settled() -> bool:
        return await outbox_parked_dead(pg) == (0, {"later": 3}, 7)

    await wait_until(settled, 30, "later's updates parked, the other failures dead letters")
    await later.enable()

    async def later_stream() -> list[Any]:
        return list(await admin_redis.xrange(f"{prefix}:later") or [])

    async def later_delivered() -> bool:
        return len(await later_stream()) == 3

    await wait_until(later_delivered, 20, "the parked updates delivered once Redis lets in")
    ops = [json.loads(fields[b"event"])["op"] for _, fields in await later_stream()]
    assert ops == ["update"] * 3
    await wait_until(lambda: parked_is(pg, {}), 20, "nothing parked")
    await wait_until(lambda: logged(active, "publisher_recovered", publisher="later"), 20,
                     "later back to direct delivery")

    # 4. status as the streaming role, while it is the active consumer.
    status = await run("status", "-c", stream_config)
    assert status.code == 0, status
    assert f"active consumer: {STREAMER_APP}" in status.stdout, status
    assert "dead letters: 7" in status.stdout, status
    as_json = await run("status", "-c", stream_config, "--json")
    assert as_json.code == 0, as_json
    info = json.loads(as_json.stdout)
    assert [t["table"] for t in info["tables"]] == ["app.items"]
    assert all(t["triggers_present"] for t in info["tables"])
    assert info["active_consumer"]["application_name"] == STREAMER_APP
    assert info["dead_letters"] == 7 and info["backlog"]["pending"] == 0

    for d in (standby, active):
        code, _ = await d.terminate()
        assert code == 0, d.stderr()
        assert "permission denied" not in d.stderr().lower(), d.stderr()
        assert "Traceback" not in d.stderr(), d.stderr()
    assert await outbox_parked_dead(pg) == (0, {}, 7)
    dead = {r["publisher"]: r["n"] for r in await pg.fetch(
        "SELECT publisher, count(*) AS n FROM pgconnector.dead_letters GROUP BY publisher")}
    assert dead == {"wrongtype": 4, "doomed": 3}
    status = await run("status", "-c", stream_config)
    assert status.code == 0 and "active consumer: none" in status.stdout, status

    # 5. Changing or removing triggers drops them, which PostgreSQL allows only the table's
    #    owner: TRIGGER is not enough for that; membership in the owning role is.
    changed_config = config_for(roles.installer, "changed.yaml", truncate=False)
    for args in (("install", "-c", changed_config), ("uninstall", "-c", install_config)):
        refused = await run(*args)
        assert refused.code == 1, refused
        assert "must be owner of relation items" in refused.stderr, refused
    await pg.execute(f"GRANT {quote_ident(roles.owner)} TO {quote_ident(roles.installer)}")
    changed = await run("install", "-c", changed_config)
    assert changed.code == 0 and "changed: app.items" in changed.stdout, changed
    removed = await run("uninstall", "-c", install_config)
    assert removed.code == 0 and "removed triggers: app.items" in removed.stdout, removed


async def parked_is(pg: asyncpg.Connection, expected: Mapping[str, int]) -> bool:
    _, parked, _ = await outbox_parked_dead(pg)
    return parked == dict(expected)


async def test_status_as_a_read_only_monitoring_role(
        database: str, pg: asyncpg.Connection, roles: Roles, redis_url: str,
        channel_prefix: str, daemons: MakeDaemon, tmp_path: Path) -> None:
    db = await prepare_database(pg, roles)
    routes = [{"table": "app.items", "publisher": "cache", "channel": f"{channel_prefix}:i"}]
    install_config = write_config(tmp_path, make_config(
        role_dsn(database, roles.installer), redis_url=redis_url, routes=routes),
        name="install.yaml")
    await install_as_installer(pg, database, db, roles, install_config)
    await grant_streamer(pg, database, db, roles, roles.streamer)
    stream = make_config(role_dsn(database, roles.streamer), redis_url=redis_url, routes=routes)
    stream["postgres"]["application_name"] = STREAMER_APP
    daemon = await daemons(write_config(tmp_path, stream, name="stream.yaml"), tmp_path,
                           args=["--no-install"]).start()
    await daemon.wait_active()

    # A monitoring role: reads the connector's tables, changes nothing.
    m = quote_ident(roles.monitor)
    await pg.execute(f"GRANT CONNECT ON DATABASE {db} TO {m}")
    await pg.execute(f"GRANT USAGE ON SCHEMA pgconnector TO {m}")
    await pg.execute("GRANT SELECT ON pgconnector.outbox, pgconnector.installed_tables, "
                     f"pgconnector.meta, pgconnector.parked, pgconnector.dead_letters TO {m}")
    monitor_config = write_config(tmp_path, make_config(
        role_dsn(database, roles.monitor), redis_url=redis_url, routes=routes),
        name="monitor.yaml")
    status = await run("status", "-c", monitor_config)
    assert status.code == 0, status
    assert f"active consumer: {STREAMER_APP}" in status.stdout, status
    as_json = await run("status", "-c", monitor_config, "--json")
    assert as_json.code == 0, as_json
    assert json.loads(as_json.stdout)["active_consumer"]["application_name"] == STREAMER_APP
    code, _ = await daemon.terminate()
    assert code == 0, daemon.stderr()


def streaming_statements(pid: int, key: int) -> dict[str, tuple[str, list[Any]]]:
    """Every statement `start --no-install` and `status` run (connector/readers/trigger.py,
    connector/store/postgres.py, connector/store/catalog.py, connector/store/install.py
    status()), with arguments of the right types."""
    q = Queries("pgconnector")
    t = ["x"]
    return {
        "table_columns": (load("table_columns"), [["app"], ["items"]]),
        "consumer_key": (q.get("consumer_key"), ["pgconnector"]),
        "try_consumer_lock": (q.get("try_consumer_lock"), [key]),
        "active_consumer": (q.get("active_consumer"), [key]),
        "pending": (q.get("pending"), []),
        "claim": (q.get("claim"), [10, 1_000_000]),
        "relations": (q.get("relations"), [[1259]]),
        "primary_keys": (q.get("primary_keys"), [["app"], ["items"]]),
        "dead_letter": (q.get("dead_letter"), [t] * 8 + [[1], t, ["[]"]]),
        "park": (q.get("park"), [t] * 7 + [["[]"], t, [0], t, [0]]),
        "parked_among": (q.get("parked_among"), [["cache"]]),
        "parked_exists": (q.get("parked_exists"), ["cache"]),
        "backlog": (q.get("backlog"), []),
        "parked_publishers": (q.get("parked_publishers"), []),
        "parked_head": (q.get("parked_head"), ["cache", 10, pid, key]),
        "parked_delivered": (q.get("parked_delivered"), [[1]]),
        "parked_failed": (q.get("parked_failed"), [[1], ["e"]]),
        "parked_to_dead": (q.get("parked_to_dead"), [[1], ["e"], [1]]),
        "parked_expired": (q.get("parked_expired"), ["cache", 1.0]),
        "schema_exists": (q.get("schema_exists"), ["pgconnector"]),
        "installed_tables": (q.get("installed_tables"), [q.trigger_names]),
        "status_extra": (q.get("status_extra"), []),
        "wakeup listen": ("LISTEN pgconnector_wakeup", []),
    }


async def failing_statements(dsn: str) -> dict[str, str]:
    """Run each streaming statement as the role of ``dsn`` (rolled back); the failures."""
    conn = await asyncpg.connect(dsn)
    try:
        key = await conn.fetchval(Queries("pgconnector").get("consumer_key"), "pgconnector")
        failures = {}
        for name, (sql, args) in streaming_statements(conn.get_server_pid(), key).items():
            tx = conn.transaction()
            await tx.start()
            try:
                await (conn.fetch(sql, *args) if args else conn.execute(sql))
            except asyncpg.PostgresError as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"
            finally:
                await tx.rollback()
        return failures
    finally:
        await conn.close()


async def test_every_streaming_privilege_is_needed(
        database: str, pg: asyncpg.Connection, roles: Roles, redis_url: str,
        tmp_path: Path) -> None:
    """With STREAMING_PRIVILEGES every statement of the daemon and `status` runs; without any
    one of them, some statement is refused."""
    db = await prepare_database(pg, roles)
    install_config = write_config(tmp_path, make_config(
        role_dsn(database, roles.installer), redis_url=redis_url,
        routes=[{"table": "app.items", "publisher": "cache", "channel": "c"}]))
    await install_as_installer(pg, database, db, roles, install_config)
    await grant_streamer(pg, database, db, roles, roles.streamer)
    dsn = role_dsn(database, roles.streamer)
    assert await failing_statements(dsn) == {}

    s = quote_ident(roles.streamer)
    refused: dict[str, dict[str, str]] = {}
    for privilege, target in STREAMING_PRIVILEGES:
        await pg.execute(f"REVOKE {privilege} ON {target} FROM {s}")
        try:
            refused[f"{privilege} ON {target}"] = await failing_statements(dsn)
        finally:
            await pg.execute(f"GRANT {privilege} ON {target} TO {s}")
    for privilege, failures in refused.items():
        assert failures, f"nothing needs {privilege}: drop it from README and this list"
        assert all(f.startswith("InsufficientPrivilegeError") for f in failures.values()), \
            (privilege, failures)
    # The status-only ones, and what the daemon itself cannot do without.
    assert set(refused["SELECT ON pgconnector.meta"]) == {"status_extra"}
    assert "claim" in refused["DELETE ON pgconnector.outbox"]
    assert "relations" in refused["SELECT ON pgconnector.installed_tables"]
    assert "park" in refused["INSERT ON pgconnector.parked"]
    assert "parked_failed" in refused["UPDATE ON pgconnector.parked"]
    assert "parked_delivered" in refused["DELETE ON pgconnector.parked"]
    assert "dead_letter" in refused["INSERT ON pgconnector.dead_letters"]
    assert "status_extra" in refused["SELECT ON pgconnector.dead_letters"]


# ---------------------------------------------------------------------------- secret leaks


class DebugDaemon(Daemon):
    """``pgconnector --log-level debug start ...`` (the global option goes before ``start``,
    where Daemon puts nothing)."""

    async def start(self) -> DebugDaemon:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                str(self.exe), "--log-level", "debug", "start", "-c", str(self.config),
                *self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self.env,
                cwd=self.workdir)
        return self


def needles(named: Mapping[str, str]) -> dict[str, str]:
    """Each secret, and each half of its random part (a partly masked or truncated secret is
    still a leak)."""
    out = {}
    for name, value in named.items():
        out[name] = value
        core = value[-24:]
        out[f"{name} (first half of its random part)"] = core[:12]
        out[f"{name} (second half of its random part)"] = core[12:]
    return out


def leaks(outputs: Mapping[str, str], secrets_: Mapping[str, str]) -> list[str]:
    return [f"{what} in {where}" for where, text in outputs.items()
            for what, needle in secrets_.items() if needle in text]


async def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and everything the server sent (status line, headers, body)."""
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}{path}") as response:
        body = await response.text()
        headers = "".join(f"{k}: {v}\n" for k, v in response.headers.items())
        return response.status, f"HTTP {response.status} {response.reason}\n{headers}\n{body}"


async def test_no_secret_in_any_output(
        database: str, pg: asyncpg.Connection, redis_url: str, channel_prefix: str,
        tmp_path: Path) -> None:
    pg_password = "pgpw" + secrets.token_hex(12)
    redis_password = "redispw" + secrets.token_hex(12)
    ably_secret = "ablysecret" + secrets.token_hex(12)
    ably_key = f"leakapp.leakkey:{ably_secret}"
    secret_needles = needles({"the PostgreSQL password": pg_password,
                              "the Redis password": redis_password,
                              "the Ably key's secret": ably_secret})
    secret_needles["the Ably API key"] = ably_key
    secret_needles["the Ably API key as Basic auth"] = base64.b64encode(
        ably_key.encode()).decode()
    await pg.execute("CREATE TABLE public.items (id int PRIMARY KEY, name text NOT NULL)")
    outputs: dict[str, str] = {}

    async with contextlib.AsyncExitStack() as stack:
        ably = stack.enter_context(AblyEndpoint(key=ably_key))
        redis_user = await stack.enter_async_context(
            RedisUser(redis_url, channel_prefix, redis_password))
        env = base_env(**ably.env())
        http_port = free_port()
        good = make_config(
            with_password(database, pg_password),
            publishers={
                "cache": {"type": "redis", "url": redis_user.url, "timeout": 2,
                          "retry": FAST_RETRY},
                # Redis refusing: nothing listens there.
                "refused": {"type": "redis", "timeout": 1, "retry": FAST_RETRY,
                            "url": f"redis://:{redis_password}@127.0.0.1:{free_port()}/0"},
                "ably": {"type": "ably", "api_key": ably_key, "endpoint": ably.host,
                         "port": ably.port, "timeout": 5, "retry": FAST_RETRY},
            },
            routes=[
                {"table": "public.items", "publisher": "cache",
                 "channel": f"{channel_prefix}:items"},
                {"table": "public.items", "publisher": "refused",
                 "channel": f"{channel_prefix}:refused"},
                {"table": "public.items", "publisher": "ably", "channel": "items:{id}"},
            ],
            server={"port": http_port})
        config = write_config(tmp_path, good)

        # The check would catch each form of each secret: they are all in the file (plus the
        # Basic auth form, which is what the SDK sends).
        planted = config.read_text() + base64.b64encode(ably_key.encode()).decode()
        assert len(leaks({"planted": planted}, secret_needles)) == len(secret_needles)

        async def cli(what: str, *args: str | Path, code: int) -> Result:
            result = await run("--log-level", "debug", *args, env=env)
            outputs[f"{what}: stdout"] = result.stdout
            outputs[f"{what}: stderr"] = result.stderr
            assert result.code == code, result
            return result

        await cli("validate", "validate", "-c", config, code=0)
        daemon = DebugDaemon(config, tmp_path, env=env)
        try:
            await daemon.start()
            await stream_with_failures(daemon, pg, ably, redis_user, redis_url, channel_prefix,
                                       http_port, outputs)
            # The CLI while the daemon runs: status shows the parked publisher.
            status = await cli("status", "status", "-c", config, code=0)
            assert "parked for refused" in status.stdout, status
            await cli("status --json", "status", "-c", config, "--json", code=0)
            dead = await cli("dead-letters list --json", "dead-letters", "list", "-c", config,
                             "--json", code=0)
            assert '"publisher": "ably"' in dead.stdout, dead
            code, _ = await daemon.terminate()
            assert code == 0, daemon.stderr()
        finally:
            await daemon.kill()
        outputs["daemon: stdout"] = daemon.stdout()
        outputs["daemon: stderr"] = daemon.stderr()
        events = daemon.events()
        assert "batch_delivered" in events, "debug logging was not on"
        for expected in ("publisher_unavailable", "publisher_recovered", "dead_lettered",
                         "stopped"):
            assert expected in events, events
        # The secrets reached their servers: Ably took the key (it checks it), Redis the
        # password (the messages came through its user, see stream_with_failures).
        assert any(r.auth == "basic" and r.status == 201 for r in ably.requests)

        # Bad configs full of secrets: each is refused, no value echoed.
        changes: list[Callable[[dict[str, Any]], object]] = [
            lambda c: c["routes"].append({"table": "items", "publisher": "nope",
                                          "channel": "x"}),
            lambda c: c["publishers"]["cache"].update(
                url=f"http://:{redis_password}@127.0.0.1:6379/0"),
            lambda c: c["publishers"]["ably"].update(api_key=ably_secret),
            lambda c: c["publishers"]["ably"].update(api_key=[ably_key]),
            lambda c: c["postgres"].update(password=[pg_password]),
            lambda c: c["postgres"].update(passwd=pg_password),
            lambda c: c["postgres"].update(port=pg_password),
        ]
        for i, change in enumerate(changes):
            bad = json.loads(json.dumps(good))
            change(bad)
            path = write_config(tmp_path, bad, name=f"bad{i}.yaml")
            assert all(s in path.read_text() for s in (pg_password, redis_password, ably_secret))
            result = await cli(f"validate bad{i}.yaml", "validate", "-c", path, code=2)
            assert result.stderr.startswith("error: "), result

        # A refused connection: nothing listens on that port.
        nowhere = write_config(tmp_path, dict(good, postgres={"dsn": with_port(
            with_password(database, pg_password), free_port())}), name="nowhere.yaml")
        for command in ("install", "status", "start"):
            result = await cli(f"{command} (nothing listens)", command, "-c", nowhere, code=1)
            assert "cannot connect to PostgreSQL" in result.stderr, result
        # A server that asks for the password, gets it, and refuses it.
        async with PasswordRefusingServer() as refusing:
            dsn = f"postgresql://postgres:{pg_password}@127.0.0.1:{refusing.port}/db"
            refusing_config = write_config(tmp_path, dict(good, postgres={"dsn": dsn}),
                                           name="refusing.yaml")
            result = await cli("install (password refused)", "install", "-c",
                               refusing_config, code=1)
            assert "rejected the credentials" in result.stderr, result
            assert refusing.passwords == [pg_password]

    assert leaks(outputs, secret_needles) == []


async def stream_with_failures(daemon: Daemon, pg: asyncpg.Connection, ably: AblyEndpoint,
                               redis_user: RedisUser, redis_url: str, prefix: str,
                               http_port: int, outputs: dict[str, str]) -> None:
    """Startup, changes, Redis and Ably failing and coming back, an Ably rejection; the
    health server's answers along the way go into ``outputs``."""
    await daemon.wait_active()

    async def fetch(path: str, label: str) -> int:
        status, text = await http_get(http_port, path)
        outputs[f"GET {path} ({label})"] = text
        return status

    assert await fetch("/healthz", "started") == 200
    await fetch("/readyz", "started")
    await fetch("/metrics", "started")

    async with RedisSubscriber(redis_url, f"{prefix}:items") as sub:
        await pg.execute("INSERT INTO public.items VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        assert len(await sub.wait_for(3, timeout=20)) == 3  # through the password
        await wait_until(lambda: len(ably.messages()) == 3, 20, "three messages on Ably")

        # Both fail: Ably answers 500, Redis refuses the user.
        ably.fail_next(500, 50000, count=8)
        await redis_user.disable()
        await pg.execute("INSERT INTO public.items VALUES (4, 'd')")
        def parked(name: str) -> Callable[[], bool]:
            return lambda: any(r.get("event") == "publisher_unavailable" and "detail" in r
                               and r.get("publisher") == name for r in daemon.log_records())

        for name in ("cache", "ably"):
            await wait_until(parked(name), 20, f"{name} parked")
        assert await fetch("/readyz", "publishers down") == 503
        assert await fetch("/metrics", "publishers down") == 200

        # Back: the parked change goes out.
        await redis_user.enable()
        assert len(await sub.wait_for(4, timeout=20)) == 4
        await wait_until(lambda: len(ably.messages("items:4")) == 1, 20, "items:4 on Ably")
        def recovered(name: str) -> Callable[[], bool]:
            return lambda: logged(daemon, "publisher_recovered", publisher=name)

        for name in ("cache", "ably"):
            await wait_until(recovered(name), 30, f"{name} recovered")

        # Ably rejects a message for good: a dead letter.
        ably.fail_next(401, 40101)
        await pg.execute("INSERT INTO public.items VALUES (5, 'e')")
        await wait_until(lambda: logged(daemon, "dead_lettered", publisher="ably"), 20,
                         "the rejected message dead-lettered")
        assert len(await sub.wait_for(5, timeout=20)) == 5
    await fetch("/readyz", "after the failures")
    await fetch("/metrics", "after the failures")
