"""Operators against the database: their SQL checked where it will run, and rebuilds.

:func:`check` runs at ``validate``, ``install`` and ``start``, before anything is written: each
operator's tables and key columns exist, its SQL prepares (a syntax error or a missing table
is a config error with the operator's key path, exit 2), ``$1`` is a key type we can bind and
every key column fits it, and no operator feeds itself through the tables its SQL writes
(read from the statement's plan, never run). It returns what the sinks need to run
(connector/operators.py :class:`OperatorBinding`).

:func:`rebuild` recomputes a whole target while the daemon streams (``pgconnector operators
rebuild``): every distinct key of the operator's tables, in chunks, each chunk a transaction
holding the operator's lock exclusively (the daemon holds it shared per batch), then the
target's rows whose key no ``delete_with`` table has any more.
"""

from __future__ import annotations

import contextlib
import decimal
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import orjson

from connector.binding import TableInfo
from connector.operators import (
    KEY_TYPES,
    ApplyKeys,
    OperatorBinding,
    OperatorSink,
    converter,
    loops,
)
from connector.store.catalog import table_info
from connector.store.postgres import Direct
from connector.store.queries import Queries, load
from connector.vocabulary import (
    Config,
    ConfigError,
    Executor,
    OperatorConfig,
    TableName,
    join_path,
    qualified,
    quote_ident,
)

__all__ = ["CHUNK", "SINCE_VERSION", "check", "rebuild", "status"]

# The schema version (sql/migrations) that has the operators table.
SINCE_VERSION = 7
# Keys per statement batch (and per transaction in a rebuild): one pipelined executemany.
CHUNK = 500
CHECK_STATEMENT = "pgconnector_operator_check"

Progress = Callable[[int, int], None]  # (keys done, keys in all)


def lock_name(schema: str, operator: str) -> str:
    """The text sql/operator_lock.sql hashes: one lock per installation and operator."""
    return f"{schema}/{operator}"


async def check(conn: asyncpg.Connection, config: Config) -> dict[str, OperatorBinding]:
    """Check every operator of ``config`` against the database (nothing is written: all of
    it runs in a transaction rolled back at the end); ConfigError lists the problems."""
    if not config.operators:
        return {}
    q = Queries(config.postgres.schema)
    tables = {t for op in config.operators for t in op.tables}
    tables |= {op.target for op in config.operators if op.target is not None}
    infos = await table_info(conn, tables)
    problems: list[str] = []
    out: dict[str, OperatorBinding] = {}
    writes: dict[str, set[TableName]] = {}
    tx = conn.transaction()
    await tx.start()
    try:
        for op in config.operators:
            binding, written, found = await _check_one(conn, q, config, op, infos)
            problems += found
            writes[op.name] = written
            if binding is not None:
                out[op.name] = binding
    finally:
        await tx.rollback()
    if not problems:
        problems += loops(config.operators, writes)
    if problems:
        raise ConfigError(problems)
    return out


async def _check_one(conn: asyncpg.Connection, q: Queries, config: Config, op: OperatorConfig,
                     infos: dict[TableName, TableInfo]
                     ) -> tuple[OperatorBinding | None, set[TableName], list[str]]:
    problems: list[str] = []
    written: set[TableName] = set() if op.target is None else {op.target}
    keep = config.capture.source == "wal" and config.capture.replica_identity == "keep"
    for table, column in op.tables.items():
        where = join_path(f"{op.path}.tables", str(table))
        info = infos.get(table)
        if info is None:
            problems.append(f"{where}: table {table} does not exist")
        elif column not in info.columns:
            problems.append(f"{where}: {table} has no column {column!r}")
        elif keep and column not in info.key:
            problems.append(f"{where}: with capture.replica_identity keep, deletes and updates "
                            f"carry the old row's primary key only, and {column!r} is not part "
                            f"of it; use replica_identity full")
    if op.target is not None:
        info = infos.get(op.target)
        if info is None:
            problems.append(f"{op.path}.target.table: table {op.target} does not exist")
        elif op.target_key not in info.columns:
            problems.append(f"{op.path}.target.key: {op.target} has no column "
                            f"{op.target_key!r}")
    if problems:
        return None, written, problems
    key_type: str | None = None
    if op.sql is not None:
        statement = await _prepare(conn, op.sql, f"{op.path}.sql", problems)
        if statement is None:
            return None, written, problems
        params = statement.get_parameters()
        if len(params) != 1:
            problems.append(f"{op.path}.sql: expected one parameter, $1 (the key); it has "
                            f"{len(params)}")
            return None, written, problems
        key_type = params[0].name
        if converter(key_type) is None:
            problems.append(f"{op.path}.sql: $1 is {key_type}, which an operator key cannot "
                            f"be (one of: {', '.join(KEY_TYPES)})")
            return None, written, problems
        for table, column in op.tables.items():
            row = await conn.fetchrow(load("operator_key_fits"), table.schema, table.name,
                                      column, params[0].oid)
            if row is not None and not row["fits"]:
                problems.append(
                    f"{join_path(f'{op.path}.tables', str(table))}: {column} is "
                    f"{row['column_type']}, which does not fit the sql's $1 "
                    f"({row['parameter_type']})")
        written |= await _writes(conn, q, op.sql, f"{op.path}.sql", problems)
    if op.rebuild_sql is not None:
        rebuild_statement = await _prepare(conn, op.rebuild_sql, f"{op.path}.rebuild_sql",
                                           problems)
        if rebuild_statement is not None and rebuild_statement.get_parameters():
            problems.append(f"{op.path}.rebuild_sql: takes no parameters (it recomputes the "
                            "whole target)")
    delete_sql = delete_type = None
    if op.delete_with:
        assert op.target is not None and op.target_key is not None
        delete_sql = load("operator_delete", target=qualified(op.target),
                          target_key=quote_ident(op.target_key))
        deleting = await _prepare(conn, delete_sql, f"{op.path}.target", problems)
        if deleting is not None:
            parameter = deleting.get_parameters()[0]
            delete_type = parameter.name
            if converter(delete_type) is None:
                problems.append(f"{op.path}.target.key: {op.target_key} is {delete_type}, "
                                f"which an operator key cannot be (one of: "
                                f"{', '.join(KEY_TYPES)})")
            for table in op.delete_with:
                row = await conn.fetchrow(load("operator_key_fits"), table.schema, table.name,
                                          op.tables[table], parameter.oid)
                if row is not None and not row["fits"]:
                    problems.append(
                        f"{op.path}.target.key: {op.target_key} is {row['parameter_type']}, "
                        f"which {table}.{op.tables[table]} ({row['column_type']}) does not fit")
    if problems:
        return None, written, problems
    binding = OperatorBinding(key_type=key_type, lock_sql=q.get("operator_lock"),
                              lock_arg=lock_name(config.postgres.schema, op.name),
                              delete_sql=delete_sql, delete_type=delete_type,
                              rebuild=_in_batch_rebuild(op))
    return binding, written, problems


async def _prepare(conn: asyncpg.Connection, sql: str, where: str, problems: list[str]
                   ) -> asyncpg.prepared_stmt.PreparedStatement | None:
    """Parse, analyse and plan ``sql`` without running it (behind a savepoint: a failure
    leaves the check's transaction usable)."""
    try:
        async with conn.transaction():
            return await conn.prepare(sql)
    except asyncpg.PostgresError as exc:
        problems.append(f"{where}: {_error_text(exc, sql)}")
        return None


def _error_text(exc: asyncpg.PostgresError, sql: str) -> str:
    """PostgreSQL's message, with the line its position points at, then its hint."""
    text = str(getattr(exc, "message", None) or exc).replace("\n", " ")
    position = getattr(exc, "position", None)
    if position and str(position).isdigit():
        line = sql[:int(position) - 1].count("\n") + 1
        text += f" (line {line} of the SQL)"
    if hint := getattr(exc, "hint", None):
        text += f"; hint: {hint}"
    return text


async def _writes(conn: asyncpg.Connection, q: Queries, sql: str, where: str,
                  problems: list[str]) -> set[TableName]:
    """The tables ``sql`` inserts into, updates, deletes from or merges into: its plan's
    ModifyTable nodes (EXPLAIN: the statement never runs)."""
    try:
        async with conn.transaction():
            # One statement (conn.prepare above refused several), so PREPARE runs only it.
            await conn.execute(f"PREPARE {CHECK_STATEMENT} AS {sql.strip().rstrip(';')}")
            plan = await conn.fetchval(q.get("operator_explain"))
            await conn.execute(f"DEALLOCATE {CHECK_STATEMENT}")
    except asyncpg.PostgresError as exc:
        problems.append(f"{where}: {_error_text(exc, sql)}")
        return set()
    found: set[TableName] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("Node Type") == "ModifyTable" and "Relation Name" in node:
                found.add(TableName(node.get("Schema", "public"), node["Relation Name"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(orjson.loads(plan) if isinstance(plan, str | bytes) else plan)
    return found


# ---------------------------------------------------------------------------- rebuilds


def _key_queries(op: OperatorConfig) -> list[str]:
    return [load("operator_keys", table=qualified(t), column=quote_ident(c))
            for t, c in sorted(op.tables.items(), key=lambda kv: str(kv[0]))]


def _orphans_sql(op: OperatorConfig) -> str | None:
    """Deletes the target's rows no delete_with table has a key for (None: nothing to)."""
    if not op.delete_with or op.target is None or op.target_key is None:
        return None
    clauses = [load("operator_orphan_clause", table=qualified(t),
                    column=quote_ident(op.tables[t]), target_key=quote_ident(op.target_key))
               .strip() for t in sorted(op.delete_with, key=str)]
    return load("operator_orphans", target=qualified(op.target), exists=" AND ".join(clauses))


async def distinct_keys(ex: Executor, op: OperatorConfig) -> list[Any]:
    """Every key of the operator's tables, as JSON values (as events carry them), in the
    order first found. In memory: a million keys are tens of MB."""
    keys: dict[str, None] = {}
    for sql in _key_queries(op):
        for row in await ex.fetch(sql, long=True):
            keys.setdefault(row["key"], None)
    return [json.loads(k, parse_float=decimal.Decimal) for k in keys]  # numerics exact


Step = Callable[[], AbstractAsyncContextManager[None]]  # around each write of a rebuild


@contextlib.asynccontextmanager
async def _in_place() -> AsyncIterator[None]:
    yield


async def _rebuild(ex: Executor, op: OperatorConfig, apply_keys: ApplyKeys, *, chunk: int,
                   step: Step = _in_place, progress: Progress | None = None) -> int | None:
    """The whole target: rebuild_sql (returns None), or the operator for every key in chunks
    then the orphans' delete (returns how many keys), each write inside ``step()``."""
    if op.rebuild_sql is not None:
        async with step():
            await ex.execute(op.rebuild_sql, long=True)
        if progress is not None:
            progress(1, 1)
        return None
    keys = await distinct_keys(ex, op)
    if progress is not None:
        progress(0, len(keys))
    for i in range(0, len(keys), chunk):
        async with step():
            await apply_keys(ex, keys[i:i + chunk])
        if progress is not None:
            progress(min(i + chunk, len(keys)), len(keys))
    if (orphans := _orphans_sql(op)) is not None:
        async with step():
            await ex.execute(orphans, long=True)
    return len(keys)


def _in_batch_rebuild(op: OperatorConfig
                      ) -> Callable[[Executor, ApplyKeys], Awaitable[None]]:
    """A truncate of one of the operator's tables (``on_truncate: rebuild``): the whole
    target, in the batch's transaction."""

    async def run(tx: Executor, apply_keys: ApplyKeys) -> None:
        await _rebuild(tx, op, apply_keys, chunk=CHUNK)

    return run


async def rebuild(conn: asyncpg.Connection, config: Config, name: str, *,
                  chunk: int = CHUNK, progress: Progress | None = None) -> int | None:
    """Recompute operator ``name``'s whole target on ``conn`` while the daemon streams;
    return how many keys were run (None: its rebuild_sql ran). ConfigError when there is
    no such operator or it fails its check."""
    op = next((o for o in config.operators if o.name == name), None)
    if op is None:
        known = ", ".join(o.name for o in config.operators) or "none"
        raise ConfigError([f"operators: no operator named {name!r} (defined: {known})"])
    binding = (await check(conn, config))[name]
    lock = Queries(config.postgres.schema).get("operator_lock_exclusive")

    @contextlib.asynccontextmanager
    async def locked() -> AsyncIterator[None]:
        """A transaction of its own, the lock taken before it reads anything: its reads are
        newer than any batch the daemon committed before, and the daemon's next batch reads
        after it."""
        async with conn.transaction():
            await conn.execute(lock, binding.lock_arg)
            yield

    keys = await _rebuild(Direct(conn), op, OperatorSink(op, binding).apply_keys, chunk=chunk,
                          step=locked, progress=progress)
    if keys is not None and op.target is not None:  # (skipped, with a warning, when the
        # role does not own it)
        await conn.execute(load("operator_analyze", target=qualified(op.target)))
    return keys


async def status(conn: asyncpg.Connection, schema: str,
                 operators: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Each operator's applied position, changes taken, dead letters and parked changes;
    ``operators`` (sink names) that applied nothing yet are listed too."""
    rows = {r["name"]: r for r in await conn.fetch(Queries(schema).get("operator_status"))}
    out = []
    for name in sorted(set(rows) | set(operators)):
        r = rows.get(name)
        out.append({
            "name": name.removeprefix("operator:"),
            "position": None if r is None else _position(r["commit_lsn"], r["change_lsn"]),
            "last_event_id": None if r is None else r["event_id"],
            "changes": 0 if r is None else r["changes"],
            "applied_at": None if r is None else r["applied_at"].isoformat(),
            "dead_letters": 0 if r is None else r["dead_letters"],
            "parked": 0 if r is None else r["parked"]})
    return out


def _position(commit_lsn: int, change_lsn: int) -> str:
    """wal: the change's LSN (in its transaction committed at commit_lsn); trigger: its
    outbox id."""
    if commit_lsn == 0:
        return f"outbox id {change_lsn}"
    return (f"{change_lsn >> 32:X}/{change_lsn & 0xFFFFFFFF:X} (commit "
            f"{commit_lsn >> 32:X}/{commit_lsn & 0xFFFFFFFF:X})")
