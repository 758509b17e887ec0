"""The "Method" section of RESULTS.md: how each figure was taken, from the run's settings."""

from __future__ import annotations

import textwrap

from bench.common import PAYLOAD_BYTES, SCHEMA, TABLE, Settings
from bench.drain import NODE_REFERENCE, SUSTAINED_CLIENTS, SUSTAINED_ROWS_PER_TX
from bench.latency import MAX_CONNECTIONS, PER_CONNECTION, WARMUP_CHANGES
from bench.memory import FLAT_SLACK_MB
from bench.wal import COPIED, LATENCY_RATES, LOGICAL


def method_notes(s: Settings, queries_source: str) -> str:
    clients = "/".join(map(str, s.clients))
    top = max(s.clients)
    rates = ", ".join(f"{r:,}" for r in s.latency_rates)
    steps = ", ".join(f"{r:,}" for r in s.sustained_rates)
    warmup = (f", after a {s.warmup_seconds} s warm-up run that is discarded"
              if s.warmup_seconds else "")
    idle = textwrap.fill(
        f"- **Idle cost.** The daemon running with capture installed and nothing written; after "
        f"{s.settle_seconds:g} s of settling, a {s.idle_seconds:g} s window. CPU = Δ(utime + "
        f"stime) of `/proc/<pid>/stat` ÷ window (the daemon process; its PostgreSQL backend's "
        f"share is in Individual runs). Queries/s: {queries_source}",
        width=95, subsequent_indent="  ", break_on_hyphens=False)
    wal = textwrap.fill(
        f"- **WAL: the wal source** (`capture.source: wal`) needs wal_level=logical, which the "
        f"shared server must not be given: its rows come from a throwaway cluster (initdb, "
        f"`{' '.join(LOGICAL)}`) that takes the shared server's {', '.join(COPIED)} as SHOW "
        f"reports them at run time (checked; values in Individual runs), and is removed at "
        f"the end. Same table and payload; every WAL row's reference is \"none\" on that "
        f"cluster in the same run (no publication, no slot, replica identity default). "
        f"\"wal\": installed with capture.source wal (publication, REPLICA IDENTITY FULL, "
        f"slot), daemon stopped, the slot accumulating; \"wal+daemon\": the daemon draining "
        f"on this host. P1 wal uses P1's scripts, clients, seconds, rounds and interleaving, "
        f"plus the trigger source on the same cluster for INSERT at {top} clients (a "
        f"comparison) and `pg_recvlogical` streaming the slot to /dev/null (`-F 0 -s 1`, the "
        f"decoding floor: PostgreSQL's own client doing nothing with the changes), with each "
        f"walsender's CPU read from /proc while pgbench runs"
        f"{'; smoke runs INSERT only' if s.smoke else ''}. Every reset moves the "
        f"slot to the WAL's end (`pg_replication_slot_advance`), so no run starts behind; "
        f"after a wal+daemon run the bench waits until the slot has passed a marker "
        f"transaction written after the writers stopped, then checks the slot holds no change. "
        f"Daemon-stopped runs must leave one change per row written in the slot (P2: exactly "
        f"{s.bulk_rows:,} inserts or updates, counted with "
        f"`pg_logical_slot_peek_binary_changes`), else the measure fails. P3 wal: "
        f"{s.drain_events:,} inserts left in the slot, drained to pub/sub and counted as in P3; "
        f"its reference is pg_recvlogical draining the same backlog from a copy of the slot "
        f"(`pg_copy_logical_replication_slot`) to /dev/null up to the WAL's end (`-E`), "
        f"first. P4 wal: P4's "
        f"{' and '.join(f'{r:,}' for r in LATENCY_RATES)} changes/s phases with default "
        f"capture settings, the reference measured before each. Idle wal: the daemon "
        f"streaming with nothing to stream for the idle window, its CPU and its walsender's "
        f"from /proc, its transactions from pg_stat_database.",
        width=95, subsequent_indent="  ", break_on_hyphens=False)
    return f"""\
- **Setup.** Database `pgconnector_bench`, created for the run and dropped after it; table
  `{TABLE}(id bigserial primary key, name text, payload jsonb, updated_at timestamptz)`,
  every row carrying the same {PAYLOAD_BYTES}-byte JSON payload. "capture" = the connector's
  objects installed with `connector.install.install` (row trigger for insert/update/delete,
  statement trigger for truncate, outbox in schema `{SCHEMA}`); "none" = not installed
  (`uninstall` between runs). Whenever the daemon runs it is the real thing: a
  `pgconnector start --no-install -c <config>` subprocess (the bench installs capture itself,
  so every variant has the same trigger), default `capture` settings (batch of 1,000),
  publishing to the local Redis (`REDIS_URL`), and counted as active from its
  `consumer_active` log line.
- **Reference column.** P1/P2: the "none" variant of the same run. P3 drain: a plain Python
  redis-py pipeline (`bench/ref_publisher.py`, asyncio + hiredis as in the daemon, 1,000
  commands per round trip, in a process of its own) publishing copies of a real event the
  daemon published (same size, own ids) with the same command, to the same subscriber: the
  floor of the Redis hop, with no database. P3 sustained: the Ably Postgres connector's (Node)
  {NODE_REFERENCE:,} msgs/s, a fixed figure (it does not run here, and no same-run reference
  makes sense for writers and drain together). P4: the writer `PUBLISH`ing the row itself
  right after its COMMIT returns (capture not installed): no durability, the floor of the hop.
  Idle: a Python process holding one bare asyncpg connection, doing nothing.
- **P1 writer cost.** `pgbench -n -M prepared -T {s.seconds}` at {clients} client(s) (`-j` =
  min(clients, CPUs)), one statement per transaction: INSERT a row; UPDATE a random row of a
  {s.update_rows:,}-row table (name and updated_at); DELETE the next row of a pre-filled table
  (`WHERE id = (SELECT nextval(...))`, so each transaction deletes one existing row; the table
  starts with {s.delete_rows:,} rows and a run that used them all is repeated on a table twice
  as large). Before every run: TRUNCATE of the table and the outbox, the pre-fill (triggers off
  for that session), VACUUM ANALYZE, CHECKPOINT. Three variants alternate, their order rotating
  each round: none; capture with the daemon stopped (the trigger's own cost, what a database
  pays when the daemon runs on another host); capture with the daemon running and draining on
  this machine (started before pgbench, everything co-located; afterwards the bench waits for
  it to empty the outbox, see Individual runs). {s.rounds} round(s), median tps{warmup}.
  Default server settings (fsync and synchronous_commit on). Targets apply at 8 clients to
  all three statements. Pushdown row (INSERT, {top} clients): the route filtered with
  `where: {{name: vip}}`, which no written row matches, so the triggers' `WHEN` clause turns
  every write away (the run checks the outbox stayed empty). Diagnostic row: the capture
  function with its `pg_notify` wake-up removed, to show what the wake-up costs.
- **P2 bulk writes.** Wall time of one `INSERT ... SELECT ... FROM generate_series(1,
  {s.bulk_rows:,})`, and of one `UPDATE` of every row of a {s.bulk_rows:,}-row table (one
  statement, autocommit, COMMIT included); none vs capture alternating, median of
  {s.bulk_rounds}; TRUNCATE, pre-fill, VACUUM ANALYZE and CHECKPOINT before each.
- **P3 drain.** The outbox is filled with {s.drain_events:,} captured changes (INSERT
  statements of 100,000 rows through the trigger), VACUUM ANALYZEd, CHECKPOINTed; then the
  daemon starts. events/s = {s.drain_events:,} ÷ (the moment the last change reached Redis -
  the daemon's `consumer_active` timestamp). Pub/sub: counted by `bench/subscriber.py`, a
  process of its own that parses the raw RESP stream with hiredis (so counting costs little
  and does not share the measuring loop's process; on 2 cores every process still competes
  with the daemon, PostgreSQL and Redis), which stamps the last message's arrival. Stream:
  `XADD` to a fresh key, XLEN polled every 0.1 s (keys deleted afterwards). The outbox is
  probed every 0.1 s (`min(id)`, an index probe) for when it is empty (Individual runs).
  Sustained: one daemon draining to pub/sub while pgbench `-R` writers ({SUSTAINED_CLIENTS}
  clients, transactions of {SUSTAINED_ROWS_PER_TX} inserted rows) produce {steps} changes/s,
  {s.sustained_seconds} s per step, rising until the daemon falls behind or the writers cannot
  produce more; per step, what the subscriber received per second while the writers ran, and
  "kept up" = at most one second of production (or 2,000 changes) still waiting when they
  stopped. The figure is the highest step it kept up with.
- **P4 latency.** Each change is one autocommit `INSERT` whose `updated_at` is
  `clock_timestamp()`, taken inside the writer's transaction before COMMIT; latency = the
  receive time in the subscriber process (`time.time()` right after the bytes are read) -
  that timestamp, same host clock, so it includes the writer's own COMMIT (WAL flush).
  Writers: ceil(rate ÷ {PER_CONNECTION:,}) asyncpg connections (at most {MAX_CONNECTIONS}) in
  the bench process, each on its own schedule; one behind schedule writes at once, and the
  rate achieved is reported when it falls short. Phases: idle (one change every
  {s.idle_interval * 1000:.0f} ms, {s.idle_changes} changes), then {rates} changes/s for
  {s.latency_seconds:g} s each (at most {s.latency_max_changes:,} changes). The first
  {WARMUP_CHANGES} changes of each phase are not counted.
- **P5 memory.** The daemon's RSS (`VmRSS` of `/proc/<pid>/status`) every 0.5 s: over each
  P3 drain (start = first sample after `consumer_active`), and through a publisher outage: a
  throwaway `redis-server` (free port, `--save ''`, no AOF) the daemon publishes to, writers
  at {s.outage_rate:,} changes/s, Redis stopped for {s.outage_seconds:g} s and started again;
  the bench waits for the backlog (outbox + parked) to empty. "Flat" = never more than
  {FLAT_SLACK_MB:g} MB above the start.{" Smoke runs retry within 1 s." if s.smoke else ""}
{idle}
{wal}
- **The machine is shared.** Writer, PostgreSQL, daemon, subscriber and Redis share its CPUs
  over loopback; run-to-run spread on a 2-core box is ±10-20 % or more (see the
  individual runs below), so read ratios, not absolutes. Before every timed run the bench
  waits (up to {s.quiet_wait:g} s, {s.quiet_budget:g} s in all) for other load to drop below
  25 % of the CPUs, and lists the runs where it did not.
"""
