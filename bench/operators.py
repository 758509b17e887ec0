"""O - operators (README: Operators): the example's derived table, post_with_comments_counts,
kept by its MERGE per changed post, on a backlog of ``operator_changes`` captured changes
left while no daemon runs; shared server, trigger source, unless said otherwise.

The backlog: ``posts`` posts (1 % of it), then two thirds of the rest comment inserts and a
third comment updates (of the oldest comments), so the derived table ends with the same
counts whichever way the comments are spread. comments(post_id) is indexed: without it each
MERGE counts a post's comments with a sequential scan of the whole table.

* O drain - comments round robin over the posts, so every batch's 1,000 changes are on 1,000
  distinct posts (nothing to coalesce: a MERGE per change). Rate from the daemon's
  consumer_active to the operators row counting every change; the derived table is then
  checked against a fresh recomputation. Reference: the same backlog routed to Redis
  pub/sub (both tables, no operator), a subscriber counting.
* O drain beside its SQL alone - the same MERGE sent by the bench process for the same keys,
  1,000 a transaction behind a savepoint as one pipelined executemany (the daemon's shape):
  what the SQL costs without the claim, routing and plan around it (diagnostic).
* O coalescing - the same changes written post after post (a batch covers about 15 posts):
  each post's MERGE runs once per batch, after its last change there. Reference: O drain.
* O wal - O drain with capture.source wal on a throwaway wal_level=logical cluster (the
  shared server's settings, as bench/wal.py starts it). Reference: the same backlog from the
  slot to Redis pub/sub, on that cluster.

MERGE runs are counted from pg_stat_user_tables (each inserts or updates one target row),
read after the daemon exits (a backend reports its counts when it ends).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import APP_NAME, SCHEMA, cpu_total, fmt_num, fmt_ratio, log, quote_ident
from bench.database import Bench
from bench.machine import wait_until_quiet
from bench.processes import Daemon, Subscriber
from bench.report import Report, Row
from bench.wal import COPIED, LogicalBench, logical_cluster, shown
from bench.wal import unavailable as wal_unavailable
from connector.config import from_dict as config_from_dict
from connector.operators import with_operators
from connector.store.install import install, uninstall

NAME = "post_with_comments_counts"
SINK = f"operator:{NAME}"  # its row in <schema>.operators
TABLES = """
CREATE TABLE posts (id serial PRIMARY KEY, title text NOT NULL);
CREATE TABLE comments (id serial PRIMARY KEY,
                       post_id int REFERENCES posts ON DELETE CASCADE, body text);
CREATE INDEX comments_post_id ON comments (post_id);
CREATE TABLE post_with_comments_counts (id int PRIMARY KEY, title text,
                                        comments_count int NOT NULL);
"""
DROP_TABLES = "DROP TABLE IF EXISTS post_with_comments_counts, comments, posts"
MERGE = """
MERGE INTO post_with_comments_counts dest
USING (SELECT p.id, p.title,
              (SELECT count(*) FROM comments c WHERE c.post_id = p.id) AS comments_count
       FROM posts p WHERE p.id = $1) src ON src.id = dest.id
WHEN NOT MATCHED THEN INSERT (id, title, comments_count)
                      VALUES (src.id, src.title, src.comments_count)
WHEN MATCHED THEN UPDATE SET title = src.title, comments_count = src.comments_count
"""
OPERATOR = {"name": NAME, "tables": {"public.posts": "id", "public.comments": "post_id"},
            "sql": MERGE, "delete_with": ["public.posts"],
            "target": {"table": f"public.{NAME}", "key": "id"}}
INSERT_POSTS = "INSERT INTO posts (title) SELECT 'post ' || g FROM generate_series(1, $1::int) g"
# $1 posts, $2 comments: post_id round robin (1, 2, ..., posts, 1, ...) or post after post.
INSERT_SPREAD = """INSERT INTO comments (post_id, body)
SELECT (g - 1) % $1::int + 1, 'comment ' || g FROM generate_series(1, $2::int) g"""
INSERT_CLUSTERED = """INSERT INTO comments (post_id, body)
SELECT ((g - 1)::bigint * $1::int / $2::int + 1)::int, 'comment ' || g
FROM generate_series(1, $2::int) g"""
UPDATE_COMMENTS = "UPDATE comments SET body = body || ' (edited)' WHERE id <= $1::int"
# Rows of the derived table that differ from a fresh recomputation, both ways.
MISMATCHES = """
WITH truth AS (SELECT p.id, p.title, count(c.id)::int AS comments_count
               FROM posts p LEFT JOIN comments c ON c.post_id = p.id GROUP BY p.id, p.title),
     derived AS (SELECT id, title, comments_count FROM post_with_comments_counts)
SELECT (SELECT count(*) FROM (SELECT * FROM truth EXCEPT SELECT * FROM derived) a)
     + (SELECT count(*) FROM (SELECT * FROM derived EXCEPT SELECT * FROM truth) b)"""
# The MERGE's writes: one target row inserted or updated per run (every key is a post).
TARGET_WRITES = f"""
SELECT n_tup_ins + n_tup_upd FROM pg_catalog.pg_stat_user_tables
WHERE relid = 'public.{NAME}'::regclass"""
POLL = 0.05  # seconds between probes of the operators row
BATCH = 1_000  # the daemon's default capture.batch_size: keys per MERGE-alone transaction
ALONE_MERGES = 10_000  # MERGE runs timed each way for the MERGE alone


@dataclass(frozen=True)
class Backlog:
    """What is written, in this order: posts, comment inserts, comment updates."""

    posts: int
    inserts: int
    updates: int
    clustered: bool = False  # comments post after post, not round robin

    @classmethod
    def of(cls, changes: int, *, clustered: bool = False) -> Backlog:
        posts = max(1, changes // 100)
        inserts = (changes - posts) * 2 // 3
        return cls(posts, inserts, changes - posts - inserts, clustered)

    @property
    def changes(self) -> int:
        return self.posts + self.inserts + self.updates

    def describe(self) -> str:
        spread = ("post after post" if self.clustered
                  else "round robin, each batch's changes on distinct posts")
        return (f"{self.posts:,} posts, {self.inserts:,} comment inserts ({spread}), "
                f"{self.updates:,} comment updates")


@dataclass(frozen=True)
class Drained:
    seconds: float  # consumer_active → the last change applied (or received)
    changes: int
    daemon_cpu: float | None = None  # cores, over the drain
    backend_cpu: float | None = None  # the daemon's PostgreSQL sessions, cores
    merges: int | None = None  # MERGE runs (operator drains)

    @property
    def rate(self) -> float:
        return self.changes / self.seconds

    def detail(self) -> str:
        parts = [f"{self.changes:,} in {self.seconds:.1f} s"]
        if self.merges is not None:
            parts.append(f"{self.merges:,} MERGE runs ({self.changes / max(1, self.merges):.1f}"
                         " changes each)")
        if self.daemon_cpu is not None:
            cpu = f"daemon CPU {self.daemon_cpu:.0%} of a core"
            if self.backend_cpu is not None:
                cpu += f", its PostgreSQL sessions {self.backend_cpu:.0%}"
            parts.append(cpu)
        return "; ".join(parts)


class Setup:
    """The three tables in one database (the shared server's or the logical cluster's), and
    capture installed afresh for each drain: the backlog written while no daemon runs."""

    def __init__(self, bench: Bench, source: str) -> None:
        self.bench = bench
        self.source = source
        self.channel = f"{bench.channel}:operators"
        base: dict[str, Any] = {
            "postgres": {"dsn": bench.url, "schema": SCHEMA, "application_name": APP_NAME},
            "logging": {"level": "info", "format": "json"}}
        if source == "wal":
            base["capture"] = {"source": "wal"}
        self.operator = {**base, "operators": [OPERATOR]}
        self.redis = {**base, "publishers": {"redis": {"type": "redis",
                                                       "url": bench.redis_url}},
                      "routes": [{"table": t, "publisher": "redis", "channel": self.channel}
                                 for t in ("public.posts", "public.comments")]}

    @property
    def db(self) -> asyncpg.Connection:
        return self.bench.db

    async def create(self) -> None:
        await self.db.execute(DROP_TABLES)
        await self.db.execute(TABLES)

    async def drop(self) -> None:
        await uninstall(self.db, SCHEMA, force=True)
        await self.db.execute(DROP_TABLES)

    async def backlog(self, config: dict[str, Any], backlog: Backlog) -> None:
        """Capture afresh with ``config`` (the operators row and the outbox or slot start
        empty), write the backlog, VACUUM ANALYZE the tables written (the claim's and the
        MERGE's plans want statistics) and CHECKPOINT. The target stays truncated, its size
        unknown to the planner as a new table's: analyzed empty, the daemon's MERGE (a
        generic plan, prepared once) scans it whole per key, slower each batch as it fills."""
        await uninstall(self.db, SCHEMA, force=True)
        await self.db.execute(f"TRUNCATE {NAME}, comments, posts RESTART IDENTITY")
        await install(self.db, with_operators(config_from_dict(config)))
        await self.db.execute(INSERT_POSTS, backlog.posts)
        await self.db.execute(INSERT_CLUSTERED if backlog.clustered else INSERT_SPREAD,
                              backlog.posts, backlog.inserts)
        await self.db.execute(UPDATE_COMMENTS, backlog.updates)
        for table in ("posts", "comments"):
            await self.db.execute(f"VACUUM ANALYZE {table}")
        if self.source != "wal":
            await self.db.execute(f"VACUUM ANALYZE {quote_ident(SCHEMA)}.outbox")
        await self.db.execute("CHECKPOINT")

    async def applied(self) -> int:
        """Changes the operator took, from its row in the operators table."""
        value = await self.db.fetchval(
            f"SELECT changes FROM {quote_ident(SCHEMA)}.operators WHERE name = $1", SINK)
        return 0 if value is None else int(value)

    async def target_writes(self) -> int:
        await self.db.execute("SELECT pg_catalog.pg_stat_clear_snapshot()")
        return int(await self.db.fetchval(TARGET_WRITES) or 0)

    async def settled_writes(self) -> int:
        """The target's write count once the daemon's backends have reported theirs: they
        do as they exit, just after leaving pg_stat_activity, so read until it holds."""
        deadline = time.monotonic() + 5
        last = await self.target_writes()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            now = await self.target_writes()
            if now == last and not await self.bench.daemon_backends():
                break
            last = now
        return last

    async def check(self, backlog: Backlog, what: str) -> None:
        """The derived table equals a fresh recomputation, and nothing is left to apply."""
        wrong = int(await self.db.fetchval(MISMATCHES))
        left = 0 if self.source == "wal" else await self.bench.outbox_count()
        rows = int(await self.db.fetchval(f"SELECT count(*) FROM {NAME}"))
        if wrong or left or rows != backlog.posts:
            raise RuntimeError(f"{what}: {wrong} rows of {NAME} differ from a fresh "
                               f"recomputation ({rows:,} rows, {backlog.posts:,} posts), "
                               f"{left:,} changes left in the outbox")

    async def merge_alone(self, runs: int, posts: int) -> tuple[float, float]:
        """The example's MERGE from the bench process, no daemon: ``runs`` over the posts in
        transactions of up to BATCH distinct keys, each behind a savepoint as the daemon's
        batch is; MERGEs/s sent as one pipelined executemany a transaction, and one round
        trip each."""
        keys = [(k % posts + 1,) for k in range(runs)]
        rates = []
        for pipelined in (True, False):
            started = time.monotonic()
            for i in range(0, len(keys), BATCH):
                async with self.db.transaction():
                    await self.db.execute("SAVEPOINT o_merge_alone")
                    if pipelined:
                        await self.db.executemany(MERGE, keys[i:i + BATCH])
                    else:
                        for key in keys[i:i + BATCH]:
                            await self.db.execute(MERGE, *key)
                    await self.db.execute("RELEASE SAVEPOINT o_merge_alone")
            rates.append(len(keys) / (time.monotonic() - started))
        return rates[0], rates[1]

    async def follow(self, daemon: Daemon, done: Callable[[], Awaitable[float | None]],
                     count: Callable[[], Awaitable[int]], n: int, what: str) -> Drained:
        """From the daemon's consumer_active until ``done`` gives the wall time the last
        change was applied or received; the daemon's CPU and its sessions' on the way."""
        assert daemon.active_at is not None
        cpu0 = daemon.cpu_seconds()
        backends = await self.bench.daemon_backends()
        backend0 = cpu_total(backends)
        deadline = time.monotonic() + max(120.0, n / 500)
        last_log = time.monotonic()
        while (finished := await done()) is None:
            if not daemon.running:
                raise RuntimeError(f"{what}: the daemon exited\n{daemon.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {await count():,}/{n:,} after "
                                   f"{time.time() - daemon.active_at:.0f} s\n{daemon.log_tail()}")
            if time.monotonic() - last_log >= 5:
                got = await count()
                log(f"{what}: {got:,}/{n:,}, {got / (time.time() - daemon.active_at):,.0f}/s")
                last_log = time.monotonic()
            await asyncio.sleep(POLL)
        seconds = finished - daemon.active_at
        cpu1 = daemon.cpu_seconds()
        return Drained(seconds, n,
                       None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / seconds,
                       (cpu_total(backends) - backend0) / seconds if backends else None)

    async def operator_drain(self, workdir: Path, report: Report, backlog: Backlog,
                             what: str) -> Drained:
        n = backlog.changes
        await self.backlog(self.operator, backlog)
        writes0 = await self.target_writes()
        await wait_until_quiet(report, what)
        daemon = await Daemon(workdir, f"o-{self.source}-{int(backlog.clustered)}",
                              self.operator).start(timeout=60)

        async def done() -> float | None:
            return time.time() if await self.applied() >= n else None

        try:
            run = await self.follow(daemon, done, self.applied, n, what)
        finally:
            await daemon.stop()
        await self.check(backlog, what)
        merges = await self.settled_writes() - writes0
        return Drained(run.seconds, n, run.daemon_cpu, run.backend_cpu, merges)

    async def redis_drain(self, workdir: Path, report: Report, backlog: Backlog,
                          what: str) -> Drained:
        n = backlog.changes
        await self.backlog(self.redis, backlog)
        sub = await Subscriber(self.bench.redis_url, self.channel).start()
        try:
            await sub.reset()
            await sub.expect(n)
            await wait_until_quiet(report, what)
            daemon = await Daemon(workdir, f"o-{self.source}-redis", self.redis).start(timeout=60)

            async def done() -> float | None:
                if sub.closed:
                    raise RuntimeError(f"{what}: Redis closed the subscriber's connection")
                return sub.done_at  # the subscriber's own clock, not the poll

            async def count() -> int:
                return sub.count

            try:
                return await self.follow(daemon, done, count, n, what)
            finally:
                await daemon.stop()
        finally:
            await sub.stop()


# --------------------------------------------------------------------------- the rows


def drain_row(report: Report, label: str, ours: Drained, ref: Drained, ref_text: str) -> None:
    report.add(Row(label, fmt_num(ours.rate), f"{fmt_num(ref.rate)} ({ref_text})",
                   fmt_ratio(ours.rate / ref.rate), "reported"))


async def run_operators(bench: Bench, report: Report, workdir: Path) -> None:
    n = report.settings.operator_changes
    spread, clustered = Backlog.of(n), Backlog.of(n, clustered=True)
    await bench.set_capture(False)  # this measure installs its own config, and removes it
    setup = Setup(bench, "trigger")
    await setup.create()
    try:
        ours = await setup.operator_drain(workdir, report, spread, "O operator drain")
        log(f"O drain: {ours.rate:,.0f} changes/s through the MERGE ({ours.detail()})")
        await wait_until_quiet(report, "O the MERGE alone")
        runs = min(ALONE_MERGES, 100 * spread.posts)
        pipelined, one_by_one = await setup.merge_alone(runs, spread.posts)
        log(f"O the MERGE alone: {pipelined:,.0f}/s pipelined, {one_by_one:,.0f}/s one round "
            "trip each")
        ref = await setup.redis_drain(workdir, report, spread, "O Redis drain")
        log(f"O drain: the same backlog to Redis pub/sub at {ref.rate:,.0f}/s")
        drain_row(report, f"O operator: apply a backlog of {n:,} changes with the example's "
                  "MERGE, each batch's changes on distinct posts (changes/s)", ours, ref,
                  "the same backlog to Redis pub/sub")
        report.details.append(f"O backlog: {spread.describe()}; comments(post_id) indexed")
        report.details.append(f"O operator drain: {ours.detail()}; Redis drain: "
                              f"{ref.detail()}")
        report.details.append("O: the derived table equalled a fresh recomputation after "
                              "each operator drain (checked), the outbox empty")
        report.add(Row(f"O operator drain (above) beside its SQL alone: the MERGE from the "
                       f"bench process, {min(BATCH, spread.posts):,} distinct posts a "
                       "transaction behind a savepoint, one pipelined executemany a "
                       "transaction (changes/s; MERGEs/s)", fmt_num(ours.rate),
                       f"{fmt_num(pipelined)} (the MERGE alone)",
                       fmt_ratio(ours.rate / pipelined), "diagnostic only"))
        report.details.append(
            f"O the MERGE alone, after the operator drain: {runs:,} runs each way, "
            f"{pipelined:,.0f}/s pipelined, {one_by_one:,.0f}/s one round trip each")

        coalesced = await setup.operator_drain(workdir, report, clustered,
                                               "O coalescing drain")
        log(f"O coalescing: {coalesced.rate:,.0f} changes/s ({coalesced.detail()})")
        drain_row(report, f"O operator, coalescing: the same {n:,} changes written post "
                  "after post (changes/s)", coalesced, ours, "round robin, above")
        report.details.append(f"O coalescing drain: {clustered.describe()}; "
                              f"{coalesced.detail()}")
    finally:
        await setup.drop()
    why = wal_unavailable()
    if why is not None:
        report.skipped.append(f"O wal: no wal_level=logical cluster can be started: {why}")
        return
    await wal_drains(bench, report, workdir, spread)


async def wal_drains(bench: Bench, report: Report, workdir: Path, backlog: Backlog) -> None:
    """O drain and its Redis reference with the wal source, on a throwaway logical cluster
    with the shared server's settings."""
    n = backlog.changes
    copied = await shown(bench.db, COPIED)
    async with logical_cluster(copied) as cluster:
        wal = LogicalBench(cluster.admin_url, bench.dbname, bench.redis_url,
                           f"{bench.channel}:wal")
        await wal.create()
        try:
            have = await shown(wal.db, [*COPIED, "wal_level"])
            if have != {**copied, "wal_level": "logical"}:
                raise RuntimeError(f"the throwaway cluster did not take its settings: {have}")
            setup = Setup(wal, "wal")
            await setup.create()
            ours = await setup.operator_drain(workdir, report, backlog, "O wal operator drain")
            log(f"O wal: {ours.rate:,.0f} changes/s through the MERGE ({ours.detail()})")
            ref = await setup.redis_drain(workdir, report, backlog, "O wal Redis drain")
            log(f"O wal: the same backlog to Redis pub/sub at {ref.rate:,.0f}/s")
        finally:
            await wal.close()
    drain_row(report, f"O operator, wal source: the same {n:,} changes from the slot "
              "(changes/s)", ours, ref, "the same backlog from the slot to Redis pub/sub")
    report.details.append(f"O wal (a throwaway wal_level=logical cluster, "
                          f"{', '.join(f'{k}={v}' for k, v in copied.items())} as on the "
                          f"shared server): operator drain {ours.detail()}; Redis drain "
                          f"{ref.detail()}")
