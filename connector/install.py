"""Installing, reconciling and removing the connector's database objects.

Everything runs in one transaction under an advisory lock, so a failed install leaves nothing
half-done and two installs cannot interleave.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from connector.binding import bind, table_info
from connector.config import Config, ConfigError, TableName
from connector.pushdown import RowTrigger, row_triggers
from connector.sql import Queries, qualified, quote_ident

CAPTURE_VERSION = 1


@dataclass
class InstallReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def touched(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def config_hash(operations: frozenset[str], triggers: list[RowTrigger] | None = None) -> str:
    blob = json.dumps({"capture": CAPTURE_VERSION, "operations": sorted(operations),
                       "triggers": [[t.op, t.events, t.when] for t in triggers or []]})
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
            problems.append(f"routes[{route.index}].table: table {route.table} does not exist")
        elif row["relkind"] not in (b"r", b"p", "r", "p"):
            problems.append(f"routes[{route.index}].table: {route.table} is not a table")
        else:
            relids[route.table] = row["relid"]
    if problems:
        raise ConfigError(problems)
    return relids


async def install(conn: asyncpg.Connection, config: Config) -> InstallReport:
    q = Queries(config.postgres.schema)
    report = InstallReport()
    async with conn.transaction():
        await conn.execute(q.get("install_lock"))
        relids = await _check_tables(conn, config)
        bound = bind(config, await table_info(conn, config.tables))
        await conn.execute(q.get("install"))
        current = {TableName(r["table_schema"], r["table_name"]): r
                   for r in await conn.fetch(q.get("installed_tables"), q.trigger_names)}
        for table, ops in sorted(config.tables.items(), key=lambda kv: str(kv[0])):
            triggers = row_triggers([b for b in bound if b.route.table == table], ops)
            digest = config_hash(ops, triggers)
            have = current.get(table)
            wanted_triggers = len(triggers) + int("truncate" in ops)
            if (have is not None and have["config_hash"] == digest
                    and have["relid"] == relids[table]
                    and have["trigger_count"] == wanted_triggers):
                report.unchanged.append(str(table))
                continue
            await _create_triggers(conn, q, table, ops, triggers)
            await conn.execute(q.get("record_table"), table.schema, table.name, relids[table],
                               sorted(ops), digest)
            (report.changed if have is not None else report.added).append(str(table))
        for table, row in current.items():
            if table not in config.tables:
                if row["table_exists"]:
                    await conn.execute(q.get("trigger_drop", table=qualified(table)))
                await conn.execute(q.get("forget_table"), table.schema, table.name)
                report.removed.append(str(table))
    return report


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
        backlog = await conn.fetchrow(q.get("backlog"))
        if backlog["pending"] and not force:
            raise BacklogNotEmpty(
                f"{backlog['pending']} captured change(s) are not delivered yet; start the "
                "daemon to deliver them, or pass --force to discard them")
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
    }
