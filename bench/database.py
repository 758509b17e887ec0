"""The bench database: created for the run and dropped after it, the capture switch, the reset
done before every timed run, and pgbench."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    APP_NAME,
    BULK_INSERT,
    CREATE_TABLE,
    DELETE_SEQUENCE,
    PAYLOAD,
    SCHEMA,
    TABLE,
    quote_ident,
    with_database,
    without_password,
)
from connector.config import from_dict as config_from_dict
from connector.store.install import install, uninstall

# The wake-up in the capture function: ``IF <cond> THEN PERFORM pg_notify(...); END IF;`` or a
# bare ``PERFORM pg_notify(...);``. Removed only for the P1 diagnostic variant.
WAKEUP_BLOCK = re.compile(
    r"IF\s[^;]*?\sTHEN\s+PERFORM\s+(?:pg_catalog\.)?pg_notify\([^;]*\);\s*END\s+IF;"
    r"|PERFORM\s+(?:pg_catalog\.)?pg_notify\([^;]*\);", re.IGNORECASE)
# P1 pushdown: a route whose filter no written row matches (names are 'user-<n>'), so the
# trigger's WHEN clause turns every write away before the capture function runs.
FILTER_NONE_MATCH = {"name": "vip"}
FILL_CHUNK = 100_000  # rows per statement when filling the table


def route(channel: str, where: dict[str, Any] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"table": f"public.{TABLE}", "publisher": "redis", "channel": channel}
    if where is not None:
        r["where"] = where
    return r


def daemon_config(dsn: str, redis_url: str, channel: str, *, mode: str = "pubsub",
                  retry: dict[str, Any] | None = None,
                  capture: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config the daemon runs with: one route from the bench table to Redis, default
    ``capture`` settings unless ``capture`` gives some (e.g. ``{"source": "wal"}``), JSON logs
    at info level (the harness reads ``consumer_active``)."""
    publisher: dict[str, Any] = {"type": "redis", "url": redis_url, "mode": mode}
    if retry:
        publisher["retry"] = retry
    config: dict[str, Any] = {
        "postgres": {"dsn": dsn, "schema": SCHEMA, "application_name": APP_NAME},
        "publishers": {"redis": publisher},
        "routes": [route(channel)],
        "logging": {"level": "info", "format": "json"},
    }
    if capture:
        config["capture"] = capture
    return config


class Bench:
    """The bench database, the capture switch and the reset done before every run."""

    def __init__(self, admin: str, dbname: str, redis_url: str, channel: str) -> None:
        self.admin = admin
        self.dbname = dbname
        self.url = with_database(admin, dbname)
        self.redis_url = redis_url
        self.channel = channel
        self.conn: asyncpg.Connection | None = None
        self.config = config_from_dict(daemon_config(self.url, redis_url, channel))
        filtered = daemon_config(self.url, redis_url, channel)
        filtered["routes"] = [route(channel, FILTER_NONE_MATCH)]
        self.filtered_config = config_from_dict(filtered)
        self.superuser = False
        self.filtered = False
        self.captured = False
        self.wakeup = True  # the capture function sends its wake-up NOTIFY

    @property
    def db(self) -> asyncpg.Connection:
        assert self.conn is not None, "bench database not open"
        return self.conn

    async def create(self) -> None:
        admin = await asyncpg.connect(self.admin)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(self.dbname)} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {quote_ident(self.dbname)}")
        finally:
            await admin.close()
        self.conn = await asyncpg.connect(self.url)
        await self.db.execute(CREATE_TABLE)
        await self.db.execute(f"CREATE SEQUENCE {DELETE_SEQUENCE}")
        self.superuser = bool(await self.db.fetchval(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"))

    async def set_capture(self, on: bool, *, wakeup: bool = True,
                          filtered: bool = False) -> None:
        """Install (``on``) or uninstall capture; ``wakeup=False`` installs it and then removes
        the wake-up NOTIFY from the capture function (a diagnostic, see strip_wakeup);
        ``filtered`` installs the route filtered to rows no write matches (pushdown)."""
        if on:
            # install is idempotent and re-creates the capture function, so this also undoes
            # an earlier strip_wakeup.
            if not self.captured or not self.wakeup or self.filtered != filtered:
                await install(self.db, self.filtered_config if filtered else self.config)
            self.captured, self.wakeup, self.filtered = True, True, filtered
            if not wakeup:
                self.wakeup = not await self.strip_wakeup()
        elif self.captured:
            await uninstall(self.db, SCHEMA, force=True)
            self.captured, self.wakeup = False, True

    async def strip_wakeup(self) -> bool:
        """Re-create the installed capture function(s) without their ``pg_notify`` call
        (this database only); False when there was none to remove."""
        functions = await self.db.fetch(
            "SELECT pg_get_functiondef(p.oid) AS def FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = $1 AND p.prosrc LIKE '%pg_notify%'", SCHEMA)
        stripped = False
        for row in functions:
            new = WAKEUP_BLOCK.sub("", row["def"])
            if new != row["def"] and "pg_notify" not in new:
                await self.db.execute(new)
                stripped = True
        return stripped

    async def fill(self, rows: int, *, captured: bool, first: int = 1,
                   progress: Any = None) -> None:
        """Insert rows ``first`` .. ``first + rows - 1`` (ids follow the table's sequence) in
        statements of FILL_CHUNK rows. ``captured=False`` keeps them out of the outbox
        (triggers off for this session when superuser, else the outbox is emptied after)."""
        replica = not captured and self.captured and self.superuser
        if replica:
            await self.db.execute("SET session_replication_role = replica")
        try:
            done = 0
            while done < rows:
                n = min(FILL_CHUNK, rows - done)
                await self.db.execute(BULK_INSERT, PAYLOAD, first + done, first + done + n - 1)
                done += n
                if progress is not None:
                    progress(done)
        finally:
            if replica:
                await self.db.execute("RESET session_replication_role")
        if not captured and self.captured and not replica:
            await self.db.execute(f"TRUNCATE {quote_ident(SCHEMA)}.outbox")

    async def reset(self, rows: int = 0) -> None:
        """Empty table and outbox, pre-fill ``rows`` rows (not captured), restart the DELETE
        sequence, VACUUM ANALYZE and CHECKPOINT: every run starts from the same state."""
        await self.db.execute(f"TRUNCATE {TABLE} RESTART IDENTITY")
        if self.captured:  # after the table: its truncate trigger writes to the outbox
            await self.db.execute(f"TRUNCATE {quote_ident(SCHEMA)}.outbox")
        await self.db.execute(f"ALTER SEQUENCE {DELETE_SEQUENCE} RESTART WITH 1")
        if rows:
            await self.fill(rows, captured=False)
            await self.db.execute(f"VACUUM ANALYZE {TABLE}")
        await self.db.execute("CHECKPOINT")

    async def outbox_count(self) -> int:
        return int(await self.db.fetchval(f"SELECT count(*) FROM {quote_ident(SCHEMA)}.outbox"))

    async def outbox_empty(self) -> bool:
        """An index probe, cheap even with a million dead rows at the head."""
        return bool(await self.db.fetchval(
            f"SELECT NOT EXISTS (SELECT 1 FROM {quote_ident(SCHEMA)}.outbox)"))

    async def outbox_head(self) -> int | None:
        """The lowest id waiting in the outbox (an index probe), None when it is empty."""
        value = await self.db.fetchval(f"SELECT min(id) FROM {quote_ident(SCHEMA)}.outbox")
        return None if value is None else int(value)

    async def outbox_tail(self) -> int:
        value = await self.db.fetchval(f"SELECT max(id) FROM {quote_ident(SCHEMA)}.outbox")
        return 0 if value is None else int(value)

    async def backlog(self) -> int:
        """Changes not yet delivered: waiting in the outbox or parked for a publisher."""
        return int(await self.db.fetchval(
            f"SELECT (SELECT count(*) FROM {quote_ident(SCHEMA)}.outbox)"
            f" + (SELECT count(*) FROM {quote_ident(SCHEMA)}.parked)"))

    async def daemon_backends(self) -> list[int]:
        """Server pids of the daemon's sessions (its application_name) in this database."""
        rows = await self.db.fetch(
            "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = current_database() "
            "AND application_name = $1", APP_NAME)
        return [r["pid"] for r in rows]

    async def drop(self) -> None:
        """Uninstall the connector's objects, then drop the database."""
        if self.conn is not None and not self.conn.is_closed():
            with contextlib.suppress(Exception):
                await uninstall(self.conn, SCHEMA, force=True)
            await self.conn.close()
        admin = await asyncpg.connect(self.admin)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(self.dbname)} WITH (FORCE)")
        finally:
            await admin.close()


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    transactions: int


class Pgbench:
    def __init__(self, binary: str, url: str, workdir: Path) -> None:
        self.binary = binary
        self.url, password = without_password(url)
        self.env = dict(os.environ)
        if password is not None:
            self.env["PGPASSWORD"] = password
        self.workdir = workdir

    def script(self, name: str, text: str) -> Path:
        path = self.workdir / f"{name}.sql"
        path.write_text(text)
        return path

    async def run(self, script: Path, clients: int, seconds: int,
                  rate: float | None = None) -> PgbenchResult:
        """``pgbench -n -M prepared`` for ``seconds``; ``rate`` throttles to that many
        transactions per second in all (``-R``)."""
        jobs = max(1, min(clients, os.cpu_count() or 1))
        cmd = [self.binary, "-n", "-M", "prepared", "-f", str(script),
               "-c", str(clients), "-j", str(jobs), "-T", str(seconds)]
        if rate is not None:
            cmd += ["-R", f"{rate:g}"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, self.url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=self.env)
        out, err = await proc.communicate()
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench exited with {proc.returncode}: "
                               f"{err.decode(errors='replace').strip()[-800:]}")
        return parse_pgbench(text)


def parse_pgbench(text: str) -> PgbenchResult:
    """tps (without connection time) and the transactions processed, from pgbench's report."""
    tps = re.search(r"^tps = ([0-9.]+) \((?:without|excluding)", text, re.MULTILINE)
    done = re.search(r"^number of transactions actually processed: (\d+)", text, re.MULTILINE)
    if tps is None or done is None:
        raise RuntimeError(f"no tps in pgbench output:\n{text}")
    return PgbenchResult(float(tps.group(1)), int(done.group(1)))
