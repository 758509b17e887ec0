"""Installing, reconciling and removing the connector's database objects.

Everything runs in one transaction under an advisory lock, so a failed install leaves nothing
half-done and two installs cannot interleave. The connector's tables change only through the
numbered migrations in sql/migrations/, each applied once (``migrate``); sql/install.sql holds
what every install re-applies.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from connector import resources
from connector.binding import bind
from connector.db import SLOT_DROPPED, SLOT_INVALIDATED, DatabaseError, slot_lost
from connector.pushdown import RowTrigger, row_triggers
from connector.store import operators as operator_checks
from connector.store.catalog import table_info
from connector.store.postgres import slot_name, slot_state
from connector.store.queries import Queries
from connector.vocabulary import Config, ConfigError, TableName, qualified, quote_ident

CAPTURE_VERSION = 1

# What releases before numbered migrations recorded as schema_version, whatever their layout.
LEGACY_VERSION = "1"
_MIGRATION_FILE = re.compile(r"([0-9]{4})_[a-z0-9_]+\.sql")


@dataclass
class InstallReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def touched(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def config_hash(operations: frozenset[str], triggers: list[RowTrigger] | None = None,
                source: str = "trigger") -> str:
    blob = json.dumps({"capture": CAPTURE_VERSION, "operations": sorted(operations),
                       "triggers": [[t.op, t.events, t.when] for t in triggers or []],
                       **({"source": source} if source != "trigger" else {})})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


async def _check_tables(conn: asyncpg.Connection, config: Config) -> dict[TableName, int]:
    """Every routed table must exist and be a table; problems are config errors (exit 2)."""
    problems, relids = [], {}
    for route in config.routes:
        if route.table in relids:
            continue
        row = await conn.fetchrow(Queries(config.postgres.schema).get("table_exists"),
                                  route.table.schema, route.table.name)
        if row is None:
            problems.append(f"{route.at}.table: table {route.table} does not exist")
        elif row["relkind"] not in (b"r", b"p", "r", "p"):
            problems.append(f"{route.at}.table: {route.table} is not a table")
        else:
            relids[route.table] = row["relid"]
    if problems:
        raise ConfigError(problems)
    return relids


async def install(conn: asyncpg.Connection, config: Config, *,
                  recreate_slot: bool = False, checked: bool = False) -> InstallReport:
    """Install or reconcile. ``recreate_slot``: a wal slot that PostgreSQL invalidated or
    that was dropped is created anew (capture starts from now; what it held is lost) -
    without it, install refuses (db.ChangesLost), never silently starting over. The
    operators' SQL is checked first (unless ``checked``): a mistake installs nothing."""
    q = Queries(config.postgres.schema)
    report = InstallReport()
    wal = config.capture.source == "wal"
    if not checked:
        await operator_checks.check(conn, config)
    if wal:
        await _check_wal(conn, q)
    async with conn.transaction():
        await conn.execute(q.get("install_lock"))
        relids = await _check_tables(conn, config)
        bound = bind(config, await table_info(conn, config.tables))
        await migrate(conn, q)
        await conn.execute(q.get("install"))
        await _switch_source(conn, q, config)
        current = {TableName(r["table_schema"], r["table_name"]): r
                   for r in await conn.fetch(q.get("installed_tables"), q.trigger_names)}
        if wal:
            await _publish(conn, q, config, relids)
        for table, ops in sorted(config.tables.items(), key=lambda kv: str(kv[0])):
            triggers = [] if wal else row_triggers(
                [b for b in bound if b.route.table == table], ops)
            digest = config_hash(ops, triggers, config.capture.source)
            have = current.get(table)
            wanted_triggers = 0 if wal else len(triggers) + int("truncate" in ops)
            if (have is not None and have["config_hash"] == digest
                    and have["relid"] == relids[table]
                    and have["trigger_count"] == wanted_triggers):
                report.unchanged.append(str(table))
                continue
            if wal:  # a table captured by triggers before
                await conn.execute(q.get("trigger_drop", table=qualified(table)))
            else:
                await _create_triggers(conn, q, table, ops, triggers)
            await conn.execute(q.get("record_table"), table.schema, table.name, relids[table],
                               sorted(ops), digest)
            (report.changed if have is not None else report.added).append(str(table))
        for table, row in current.items():
            if table not in config.tables:
                if row["table_exists"]:
                    await conn.execute(q.get("trigger_drop", table=qualified(table)))
                    await _restore_identity(conn, q, table, row["prior_identity"])
                await conn.execute(q.get("forget_table"), table.schema, table.name)
                report.removed.append(str(table))
        if wal:
            await _set_identities(conn, q, config)
    if wal:
        await _create_slot(conn, q, config, recreate_slot)
    return report


@dataclass(frozen=True, order=True)
class Migration:
    version: int
    name: str  # sql/migrations/<name>.sql


def migrations() -> list[Migration]:
    """sql/migrations/NNNN_*.sql in order; numbered from 1 without gaps."""
    found = sorted(Migration(int(m[1]), f.removesuffix(".sql"))
                   for f in resources.sql_names("migrations")
                   if (m := _MIGRATION_FILE.fullmatch(f)))
    if not found or [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("sql/migrations: expected files numbered from 0001 without gaps, "
                           f"found {[m.name for m in found]}")
    return found


async def migrate(conn: asyncpg.Connection, q: Queries, upto: int | None = None) -> list[str]:
    """Apply the migrations this installation lacks, in order, recording each as
    meta.schema_version; return their names. The caller holds the install lock in a
    transaction, so a failing migration leaves the version before it whole. ``upto`` stops
    early (tests build each version in turn)."""
    known = migrations()
    latest = known[-1].version
    current = await _schema_version(conn, q)
    if current > latest:
        raise DatabaseError(
            f"schema {q.schema_name!r} is at version {current}, made by a newer pgconnector "
            f"(this one knows up to {latest}): run that release or a later one; schemas are "
            "never downgraded")
    applied = []
    for m in known:
        if current < m.version <= (latest if upto is None else upto):
            await conn.execute(q.get(f"migrations/{m.name}"))
            await conn.execute(q.get("meta_set"), "schema_version", str(m.version))
            applied.append(m.name)
    return applied


async def _schema_version(conn: asyncpg.Connection, q: Queries) -> int:
    """The last migration applied to this installation; 0 when there is none."""
    if not (await conn.fetchrow(q.get("schema_exists"), q.schema_name))["installed"]:
        return 0
    recorded: str | None = await conn.fetchval(q.get("meta_get"), "schema_version")
    if recorded is None or recorded == LEGACY_VERSION:
        return await _adopt_legacy(conn, q)
    if not re.fullmatch(r"[0-9]+", recorded):
        raise DatabaseError(f"schema {q.schema_name!r} records schema_version {recorded!r}, "
                            "which no pgconnector writes")
    return int(recorded)


async def _adopt_legacy(conn: asyncpg.Connection, q: Queries) -> int:
    """An installation from before numbered migrations: find which migrations its layout
    already has and record that as its version. (A database this release migrated to 1 only
    is found to be at 1 too.)"""
    rows = await conn.fetch(q.get("migrations/legacy_layout"), q.schema_name)
    found = [r["version"] for r in rows if r["present"]]
    level = 1 + len(found)
    if found != list(range(2, level + 1)):
        raise DatabaseError(f"schema {q.schema_name!r}: its tables have the changes of "
                            f"migrations {found} only, a layout no pgconnector release made; "
                            "cannot tell which migrations to apply")
    if level >= 3:
        await conn.execute(q.get("migrations/legacy_parked_route"))
    await conn.execute(q.get("meta_set"), "schema_version", str(level))
    return level


def wal_names(config: Config) -> tuple[str, str]:
    """(slot, publication) of a wal installation."""
    cap = config.capture
    return cap.slot or slot_name(config.postgres.schema), cap.publication or config.postgres.schema


async def _check_wal(conn: asyncpg.Connection, q: Queries) -> None:
    """Before anything is written: what the wal source needs from the server and the role."""
    row = await conn.fetchrow(q.get("wal_prerequisites"))
    if row["version"] < 140000:
        raise DatabaseError("capture.source wal needs PostgreSQL 14 or later; this server is "
                            f"{row['version'] // 10000}; use capture.source trigger")
    if row["wal_level"] != "logical":
        raise DatabaseError(f"capture.source wal needs wal_level = logical (it is "
                            f"{row['wal_level']}): set it in postgresql.conf and restart "
                            "PostgreSQL, or use capture.source trigger")
    if not row["replication"]:
        raise DatabaseError("capture.source wal needs a role with the REPLICATION attribute "
                            "(ALTER ROLE ... REPLICATION); README: Database privileges")


async def _switch_source(conn: asyncpg.Connection, q: Queries, config: Config) -> None:
    """Changing capture.source must not drop what the old source holds undelivered."""
    before = await conn.fetchval(q.get("meta_get"), "source") or "trigger"
    after = config.capture.source
    if before != after:
        pending = await _undelivered(conn, q, before)
        if pending:
            raise BacklogNotEmpty(
                f"capture.source: {pending} change(s) captured by the {before} source are not "
                f"delivered yet; run with capture.source {before} until they are, then switch")
        if before == "wal":
            await _drop_wal(conn, q)
    await conn.execute(q.get("meta_set"), "source", after)


async def _undelivered(conn: asyncpg.Connection, q: Queries, source: str) -> int:
    """Changes captured and not delivered yet: in the outbox, and in the slot for wal."""
    pending: int = (await conn.fetchrow(q.get("backlog")))["pending"]
    if source == "wal":
        slot, publication = await _wal_meta(conn, q)
        if slot and await conn.fetchrow(q.get("wal_slot"), slot):
            pending += await conn.fetchval(q.get("wal_undelivered"), slot, publication)
    return pending


async def _wal_meta(conn: asyncpg.Connection, q: Queries) -> tuple[str | None, str | None]:
    """(slot, publication) as the installed wal source recorded them."""
    return (await conn.fetchval(q.get("meta_get"), "slot"),
            await conn.fetchval(q.get("meta_get"), "publication"))


async def _publish(conn: asyncpg.Connection, q: Queries, config: Config,
                   relids: dict[TableName, int]) -> None:
    """The publication lists exactly the captured tables; their updates and deletes carry what
    capture.replica_identity asks for."""
    slot, publication = wal_names(config)
    tables = ", ".join(qualified(t) for t in sorted(config.tables, key=str))
    pub = quote_ident(publication)
    exists = await conn.fetchval(q.get("publication_exists"), publication)
    listed = {TableName(r["table_schema"], r["table_name"])
              for r in await conn.fetch(q.get("publication_tables"), publication)}
    joining = sorted((t for t in config.tables if t not in listed), key=str)
    if exists and joining:
        await conn.execute(q.get("publication_lock_new",
                                 tables=", ".join(qualified(t) for t in joining)))
    if tables and exists:
        await conn.execute(q.get("publication_set", publication=pub, tables=tables))
    elif tables:
        await conn.execute(q.get("publication_create", publication=pub, tables=tables))
    elif exists:  # nothing captured (handlers may come later): a publication of nothing
        if listed:
            await conn.execute(q.get("publication_drop_tables", publication=pub, tables=", ".join(
                qualified(t) for t in sorted(listed, key=str))))
    else:
        await conn.execute(q.get("publication_create_empty", publication=pub))
    if config.capture.replica_identity != "full":
        missing = await conn.fetch(q.get("replica_identity_missing"), list(relids.values()))
        if missing:
            raise ConfigError([
                f"capture.replica_identity: table {r['table_name']} has no primary key, so "
                "PostgreSQL would refuse its updates and deletes once it is published; add "
                "one, or use replica_identity full" for r in missing])
    await conn.execute(q.get("meta_set"), "slot", slot)
    await conn.execute(q.get("meta_set"), "publication", publication)


async def _set_identities(conn: asyncpg.Connection, q: Queries, config: Config) -> None:
    """replica_identity full: set FULL, remembering what each table had; keep: give back
    what an earlier install changed."""
    full = config.capture.replica_identity == "full"
    priors = {TableName(r["table_schema"], r["table_name"]): r["prior_identity"]
              for r in await conn.fetch(q.get("installed_tables"), q.trigger_names)}
    for table in sorted(config.tables, key=str):
        state = await conn.fetchrow(q.get("identity_state"), table.schema, table.name)
        if full and state["identity"] != "f":
            prior = state["identity"] + (f":{state['index_name']}" if state["index_name"] else "")
            await conn.execute(q.get("identity_record"), table.schema, table.name, prior, False)
            await conn.execute(q.get("replica_identity", table=qualified(table), identity="FULL"))
        elif not full:
            await _restore_identity(conn, q, table, priors.get(table))


async def _restore_identity(conn: asyncpg.Connection, q: Queries, table: TableName,
                            prior: str | None) -> None:
    """Give a table back the replica identity it had before install set FULL."""
    if not prior:
        return
    kind, _, index = prior.partition(":")
    identity = {"d": "DEFAULT", "n": "NOTHING"}.get(kind) or f"USING INDEX {quote_ident(index)}"
    await conn.execute(q.get("replica_identity", table=qualified(table), identity=identity))
    await conn.execute(q.get("identity_record"), table.schema, table.name, None, True)


async def _create_slot(conn: asyncpg.Connection, q: Queries, config: Config,
                       recreate: bool) -> None:
    """After the install committed: PostgreSQL creates a logical slot only outside any
    transaction that wrote. Changes are captured from this moment on. meta's slot_created
    remembers that this installation had the slot, so that losing it is never mistaken for
    a first install."""
    slot, _ = wal_names(config)
    have = await conn.fetchrow(q.get("wal_slot"), slot)
    created = await conn.fetchval(q.get("meta_get"), "slot_created") == slot
    if have is not None and have["wal_status"] == "lost":
        if not recreate:
            raise slot_lost(slot, SLOT_INVALIDATED)
        await conn.execute(q.get("wal_slot_drop"), slot)
        have = None
    elif have is None and created and not recreate:
        raise slot_lost(slot, SLOT_DROPPED)
    if have is None:
        await conn.execute(q.get("wal_slot_create"), slot)
        await conn.execute(q.get("meta_set"), "slot_created", slot)
    elif have["plugin"] != "pgoutput" or not have["here"]:
        raise DatabaseError(f"capture.slot: replication slot {slot!r} exists but belongs to "
                            "another database or plugin; choose another capture.slot")


async def _drop_wal(conn: asyncpg.Connection, q: Queries) -> None:
    """Leave the wal source: remove the slot (else the server keeps WAL for it for ever) and
    the publication, and give the tables back their replica identity."""
    slot, publication = await _wal_meta(conn, q)
    if slot:
        await conn.execute(q.get("wal_slot_drop"), slot)
        await conn.execute(q.get("meta_set"), "slot_created", "")
    if publication:
        await conn.execute(q.get("publication_drop", publication=quote_ident(publication)))
    for row in await conn.fetch(q.get("installed_tables"), q.trigger_names):
        if row["table_exists"]:
            await _restore_identity(conn, q, TableName(row["table_schema"], row["table_name"]),
                                    row["prior_identity"])


async def _create_triggers(conn: asyncpg.Connection, q: Queries, table: TableName,
                           ops: frozenset[str], triggers: list[RowTrigger]) -> None:
    target = qualified(table)
    await conn.execute(q.get("trigger_drop", table=target))
    for t in triggers:
        await conn.execute(q.get("trigger_row", table=target, events=t.events, when=t.when,
                                 row_trigger=quote_ident(q.op_trigger_names[t.op])))
    if "truncate" in ops:
        await conn.execute(q.get("trigger_truncate", table=target))


class BacklogNotEmpty(Exception):
    """Uninstall would discard undelivered changes."""


async def uninstall(conn: asyncpg.Connection, schema: str, force: bool = False) -> list[str]:
    """Remove triggers and the connector's objects; return the tables released."""
    q = Queries(schema)
    async with conn.transaction():
        await conn.execute(q.get("install_lock"))
        state = await conn.fetchrow(q.get("schema_exists"), schema)
        if not state["installed"]:
            return []
        source = await conn.fetchval(q.get("meta_get"), "source") or "trigger"
        pending = await _undelivered(conn, q, source)
        if pending and not force:
            raise BacklogNotEmpty(
                f"{pending} captured change(s) are not delivered yet; start the "
                "daemon to deliver them, or pass --force to discard them")
        if source == "wal":
            await _drop_wal(conn, q)
        released = []
        for row in await conn.fetch(q.get("installed_tables"), q.trigger_names):
            table = TableName(row["table_schema"], row["table_name"])
            if row["table_exists"]:
                await conn.execute(q.get("trigger_drop", table=qualified(table)))
            released.append(str(table))
        await conn.execute(q.get("uninstall"))
        if await conn.fetchval(q.get("schema_objects"), schema) == 0:
            await conn.execute(q.get("drop_schema"))
    return released


async def status(conn: asyncpg.Connection, schema: str) -> dict[str, Any]:
    q = Queries(schema)
    state = await conn.fetchrow(q.get("schema_exists"), schema)
    if not state["installed"]:
        return {"schema": schema, "installed": False}
    tables = [
        {"table": str(TableName(r["table_schema"], r["table_name"])),
         "operations": list(r["operations"]),
         "triggers_present": r["table_exists"] and r["trigger_count"] > 0,
         "installed_at": r["installed_at"].isoformat()}
        for r in await conn.fetch(q.get("installed_tables"), q.trigger_names)
    ]
    backlog = await conn.fetchrow(q.get("backlog"))
    key = await conn.fetchval(q.get("consumer_key"), schema)
    active = await conn.fetchrow(q.get("active_consumer"), key)
    extra = await conn.fetchrow(q.get("status_extra"))
    parked = await conn.fetch(q.get("parked_publishers"))
    slot: dict[str, Any] | None = None
    if await conn.fetchval(q.get("meta_get"), "source") == "wal":
        slot = await _slot_status(conn, q)
    return {
        "schema": schema,
        "installed": True,
        "schema_version": extra["schema_version"],
        "tables": tables,
        "backlog": {"pending": backlog["pending"],
                    "oldest_age_seconds": backlog["oldest_age"]},
        "dead_letters": extra["dead_letters"],
        "parked": {r["publisher"]: {"messages": r["messages"],
                                    "oldest_age_seconds": r["oldest_age"]} for r in parked},
        "active_consumer": None if active is None else {
            "pid": active["pid"], "application_name": active["application_name"],
            "client_addr": active["client_addr"],
            # Another role's session hides these (unless pg_read_all_stats): null then.
            "since": None if active["backend_start"] is None
            else active["backend_start"].isoformat()},
        "slot": slot,
    }


async def _slot_status(conn: asyncpg.Connection, q: Queries) -> dict[str, Any]:
    """The wal source's slot: what it holds back, how close to being invalidated it is, and
    the lag the daemon's last heartbeat measured."""
    name, _ = await _wal_meta(conn, q)
    row = await conn.fetchrow(q.get("wal_backlog"), name)
    lag = await conn.fetchrow(q.get("wal_lag"), name)
    seconds = None if lag is None or lag["lag_seconds"] < 0 else lag["lag_seconds"]
    out: dict[str, Any] = {"name": name, "exists": row is not None, "lag_seconds": seconds,
                           "lag_measured_at": None if seconds is None
                           else lag["measured_at"].isoformat()}
    if row is not None:
        state = slot_state(row)
        out.update(wal_status=state.wal_status, active=row["active"],
                   lag_bytes=state.lag_bytes, retained_bytes=state.retained_bytes,
                   safe_wal_bytes=state.safe_wal_bytes, max_slot_wal_keep_bytes=state.keep_bytes,
                   near_limit=state.near_limit)
    return out
