"""The Store on PostgreSQL: every statement the engine runs on the connector's own schema.

The statements live in sql/ (connector/store/queries.py renders them for a schema); this
module binds their arguments. Readers call the outbox and slot methods on their session; the
lease, the ledger of dead letters and parked messages, and the gauges are the
:class:`connector.store.base.Store` contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import asyncpg
import orjson

from connector import db
from connector.store.base import (
    Applied,
    Backlog,
    Executor,
    ParkedLot,
    ParkedMessage,
    Row,
    SlotState,
    Store,
)
from connector.store.queries import Queries
from connector.vocabulary import (
    CaptureConfig,
    ChangeEvent,
    DeadLetter,
    Message,
    Parked,
    PostgresConfig,
    Snapshot,
)

# The prefix of the wal reader's heartbeat messages (sql/wal_heartbeat.sql).
HEARTBEAT_PREFIX = "pgconnector.heartbeat"


def parse_lsn(text: str) -> int:
    """PostgreSQL's text form of a WAL position (``16/B374D848``) as a number."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def slot_state(row: Row) -> SlotState:
    """A row of sql/wal_backlog.sql."""
    return SlotState(row["lag_bytes"] or 0, row["retained_bytes"] or 0, row["wal_status"],
                     row["safe_wal_size"], row["keep_bytes"])


def slot_name(schema: str) -> str:
    """The default slot of an installation: slot names allow only [a-z0-9_]."""
    return re.sub(r"[^a-z0-9_]", "_", schema.lower())[:63] or "pgconnector"


class Direct:
    """An :class:`Executor` on a plain connection (no time limits of its own)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any, long: bool = False) -> list[Row]:
        return list(await self.conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any, long: bool = False) -> Row | None:
        row: Row | None = await self.conn.fetchrow(sql, *args)
        return row

    async def fetchval(self, sql: str, *args: Any, long: bool = False) -> Any:
        return await self.conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any, long: bool = False) -> str:
        return str(await self.conn.execute(sql, *args))

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]], *,
                          long: bool = False) -> None:
        await self.conn.executemany(sql, args)


def park_args(parked: Sequence[Parked]) -> tuple[list[Any], ...]:
    """The column arrays of sql/park.sql, in order."""
    ms = [p.message for p in parked]
    return ([m.publisher for m in ms], [m.channel for m in ms], [m.name for m in ms],
            [m.message_id for m in ms], [m.event.schema for m in ms],
            [m.event.table for m in ms], [m.event.op for m in ms],
            [orjson.dumps(m.event.key).decode() for m in ms],
            [m.payload.decode() for m in ms], [p.attempts for p in parked],
            [p.error for p in parked], [m.route for m in ms])


def dead_letter_args(dead: Sequence[DeadLetter]) -> tuple[list[Any], ...]:
    """The column arrays of sql/dead_letter.sql, in order."""
    ms = [d.message for d in dead]
    return ([m.message_id for m in ms], [m.event.schema for m in ms],
            [m.event.table for m in ms], [m.event.op for m in ms], [m.publisher for m in ms],
            [m.channel for m in ms], [m.payload.decode() for m in ms], [d.error for d in dead],
            [d.attempts for d in dead], [m.name for m in ms],
            [orjson.dumps(m.event.key).decode() for m in ms])


def to_message(publisher: str, row: asyncpg.Record) -> Message:
    """A parked row back into the message it was. The payload is what was to be published; it
    also stands in for the event (a sink reads the rows and key from it)."""
    payload = row["payload"].encode()
    event = ChangeEvent(row["id"], row["table_schema"], row["table_name"], row["op"], payload,
                        tuple(row["key_columns"]), row["message_id"])
    return Message(publisher, row["channel"], row["name"], payload, event, row["message_id"],
                   row["route"])


class PostgresStore(Store):
    def __init__(self, pg: PostgresConfig, capture: CaptureConfig | None = None) -> None:
        capture = capture or CaptureConfig()
        self.pg = pg
        self.q = Queries(pg.schema)
        self.source = capture.source
        self.slot = capture.slot or slot_name(pg.schema)
        self.publication = capture.publication or pg.schema

    # ------------------------------------------------------------------ the Store contract

    async def record(self, ex: Executor, dead: Sequence[DeadLetter],
                     parked: Sequence[Parked]) -> None:
        if dead:
            await ex.execute(self.q.get("dead_letter"), *dead_letter_args(dead), long=True)
        if parked:
            await ex.execute(self.q.get("park"), *park_args(parked), long=True)

    async def parked_among(self, ex: Executor, sinks: Sequence[str]) -> set[str]:
        rows = await ex.fetch(self.q.get("parked_among"), list(sinks))
        return {r["name"] for r in rows}

    async def has_parked(self, ex: Executor, sink: str) -> bool:
        return bool(await ex.fetchval(self.q.get("parked_exists"), sink))

    async def discard_parked(self, ex: Executor, sink: str) -> int:
        return int(await ex.fetchval(self.q.get("parked_discard"), sink) or 0)

    async def backlog(self, ex: Executor) -> Backlog:
        parked = await ex.fetch(self.q.get("parked_publishers"), long=True)
        counts = {r["publisher"]: r["messages"] for r in parked}
        if self.source == "wal":
            return Backlog(None, None, counts, slot=await self.slot_state(ex))
        row = await ex.fetchrow(self.q.get("backlog"), long=True)
        assert row is not None
        return Backlog(row["pending"], row["oldest_age"], counts)

    async def applied(self, ex: Executor, sinks: Sequence[str]) -> dict[str, tuple[int, int]]:
        rows = await ex.fetch(self.q.get("operator_applied"), list(sinks))
        return {r["name"]: (r["commit_lsn"], r["change_lsn"]) for r in rows}

    async def record_applied(self, ex: Executor, applied: Sequence[Applied]) -> None:
        if applied:
            await ex.execute(self.q.get("operator_record"), [a.sink for a in applied],
                             [a.order[0] for a in applied], [a.order[1] for a in applied],
                             [a.event_id for a in applied], [a.changes for a in applied])

    def lot(self, sink: str, lease: tuple[int, int]) -> ParkedLot:
        return PostgresLot(self, sink, lease)

    # ------------------------------------------------------------------ the lease

    async def consumer_key(self, ex: Executor) -> int:
        return int(await ex.fetchval(self.q.get("consumer_key"), self.pg.schema))

    async def try_lock(self, ex: Executor, key: int) -> bool:
        return bool(await ex.fetchval(self.q.get("try_consumer_lock"), key))

    async def active_consumer(self, ex: Executor, key: int) -> Row | None:
        """The session holding the lease: pid, application_name, idle_seconds (or None)."""
        return await ex.fetchrow(self.q.get("active_consumer"), key)

    async def terminate(self, ex: Executor, pid: int) -> bool:
        return bool(await ex.fetchval(self.q.get("terminate_backend"), pid))

    # ------------------------------------------------------------------ the outbox (trigger)

    async def pending(self, ex: Executor) -> bool:
        return bool(await ex.fetchval(self.q.get("pending")))

    async def claim(self, ex: Executor, batch_size: int, max_bytes: int) -> list[Row]:
        """Claim (delete, inside the open transaction) the next rows of the outbox."""
        return await ex.fetch(self.q.get("claim"), batch_size, max_bytes, long=True)

    async def savepoint(self, ex: Executor, name: str) -> None:
        await ex.execute(f"SAVEPOINT {_ident(name)}")

    async def rollback_to(self, ex: Executor, name: str) -> None:
        await ex.execute(f"ROLLBACK TO SAVEPOINT {_ident(name)}")

    async def doze(self, ex: Executor) -> bool:
        return bool(await ex.fetchval(self.q.get("doze")))

    async def undoze(self, ex: Executor) -> None:
        await ex.fetchval(self.q.get("undoze"))

    async def relations(self, ex: Executor, relids: Sequence[int]) -> dict[int, tuple[str, str]]:
        rows = await ex.fetch(self.q.get("relations"), list(relids))
        return {r["relid"]: (r["schema_name"], r["table_name"]) for r in rows}

    async def primary_keys(self, ex: Executor, tables: Sequence[tuple[str, str]]
                           ) -> dict[tuple[str, str], tuple[str, ...]]:
        rows = await ex.fetch(self.q.get("primary_keys"), [t[0] for t in tables],
                              [t[1] for t in tables])
        return {(r["schema_name"], r["table_name"]): tuple(r["columns"]) for r in rows}

    # ------------------------------------------------------------------ the slot (wal)

    async def slot_state(self, ex: Executor) -> SlotState:
        """The slot as pg_replication_slots shows it. Raises ChangesLost when it was
        invalidated or dropped: what it held is gone."""
        row = await ex.fetchrow(self.q.get("wal_backlog"), self.slot, long=True)
        if row is None:
            raise db.slot_lost(self.slot, db.SLOT_DROPPED)
        if row["wal_status"] == "lost":
            raise db.slot_lost(self.slot, db.SLOT_INVALIDATED)
        return slot_state(row)

    async def heartbeat(self, ex: Executor, *, periodic: bool, behind_bytes: int,
                        lag_seconds: float | None) -> int | None:
        """Write a heartbeat message when ``periodic`` or the slot is more than
        ``behind_bytes`` behind the WAL's end (sql/wal_heartbeat.sql); its position, or
        None when none was written."""
        lsn = await ex.fetchval(self.q.get("wal_heartbeat"), self.slot, periodic, behind_bytes,
                                -1.0 if lag_seconds is None else lag_seconds,
                                HEARTBEAT_PREFIX, long=True)
        return None if lsn is None else parse_lsn(lsn)

    async def end_slot_holder(self, ex: Executor) -> int | None:
        """End the walsender streaming our slot (an instance that lost the lease), and wait
        until the slot is free; its pid, or None when none held it."""
        row = await ex.fetchrow(self.q.get("wal_slot_end_holder"), self.slot)
        pid = None if row is None else row["pid"]
        for _ in range(100):
            if not await ex.fetchval(self.q.get("wal_slot_active"), self.slot):
                break
            await asyncio.sleep(0.05)
        return None if pid is None else int(pid)

    async def snapshot(self, ex: Executor) -> Snapshot:
        """Which transactions ``ex``'s next statement would see as committed."""
        return Snapshot.parse(await ex.fetchval(self.q.get("current_snapshot")))

    async def type_name(self, ex: Executor, oid: int) -> str:
        return str(await ex.fetchval(self.q.get("type_name"), oid))

    async def to_json(self, ex: Executor, type_name: str, texts: list[str]) -> list[str]:
        rows = await ex.fetch(self.q.get("wal_to_json", type=type_name), texts, long=True)
        return [r["value"] for r in rows]


def _ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"not a plain savepoint name: {name!r}")
    return name


class PostgresLot(ParkedLot):
    def __init__(self, store: PostgresStore, sink: str, lease: tuple[int, int]) -> None:
        self.store, self.q = store, store.q
        self.sink = sink
        self.lock_pid, self.lock_key = lease
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await db.connect(self.store.pg)
        return self._conn

    async def head(self, limit: int) -> list[ParkedMessage]:
        conn = await self._connection()
        rows = await conn.fetch(self.q.get("parked_head"), self.sink, limit, self.lock_pid,
                                self.lock_key)
        return [ParkedMessage(r["id"], to_message(self.sink, r), r["attempts"], r["age"])
                for r in rows]

    async def settle(self, delivered: Sequence[int], failed: Sequence[tuple[int, str]],
                     dead: Sequence[tuple[int, str, int]]) -> None:
        conn = await self._connection()
        async with conn.transaction():
            if delivered:
                await conn.execute(self.q.get("parked_delivered"), list(delivered))
            if failed:
                await conn.execute(self.q.get("parked_failed"), [i for i, _ in failed],
                                   [e for _, e in failed])
            if dead:
                await conn.execute(self.q.get("parked_to_dead"), [i for i, _, _ in dead],
                                   [e for _, e, _ in dead], [a for _, _, a in dead])

    async def expire(self, max_age: float) -> list[tuple[int, str]]:
        conn = await self._connection()
        rows = await conn.fetch(self.q.get("parked_expired"), self.sink, max_age)
        if rows:
            await conn.execute(self.q.get("parked_to_dead"), [r["id"] for r in rows],
                               [f"gave up after {max_age:g} s: {r['last_error']}"
                                for r in rows],
                               [r["attempts"] for r in rows])
        return [(r["route"], r["last_error"]) for r in rows]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        conn = await self._connection()
        async with conn.transaction():
            yield Direct(conn)

    async def reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
