-- Objects of one pgconnector installation, all in {schema}. Idempotent: safe to run again.
-- {schema} is replaced by the quoted schema identifier before this runs (connector/sql.py).

CREATE SCHEMA IF NOT EXISTS {schema};

-- One row per key; 'schema_version' tells which layout of these objects is installed.
CREATE TABLE IF NOT EXISTS {schema}.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- What install put on user tables, so reconcile and uninstall touch exactly that.
CREATE TABLE IF NOT EXISTS {schema}.installed_tables (
    table_schema text        NOT NULL,
    table_name   text        NOT NULL,
    relid        oid         NOT NULL,
    operations   text[]      NOT NULL,
    config_hash  text        NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_schema, table_name)
);
-- The wal source: the replica identity the table had before install set it FULL, restored by
-- uninstall (d, n, or i:<index>; NULL: install did not change it).
ALTER TABLE {schema}.installed_tables ADD COLUMN IF NOT EXISTS prior_identity text;

-- Every captured change, written by the capture trigger in the application's transaction and
-- deleted by the daemon in the transaction that publishes it. Kept narrow on purpose: each
-- byte here is paid by every application write (bench/RESULTS.md).
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid        xid8        NOT NULL,
    captured_at timestamptz NOT NULL,
    relid       oid         NOT NULL,
    op          "char"      NOT NULL,   -- i u d t
    -- json, not jsonb: to_json(NEW) is text the claim hands out as it is, where jsonb would be
    -- converted to a tree here and back to text at every claim (bench/RESULTS.md).
    old_row     json,
    new_row     json
);
-- Installs from before: rows stored as jsonb (their text is the same JSON).
DO $do$
BEGIN
    IF (SELECT atttypid FROM pg_catalog.pg_attribute
        WHERE attrelid = '{schema}.outbox'::regclass AND attname = 'new_row')
       = 'jsonb'::regtype THEN
        ALTER TABLE {schema}.outbox ALTER COLUMN old_row TYPE json USING old_row::json,
                                    ALTER COLUMN new_row TYPE json USING new_row::json;
    END IF;
END
$do$;

-- Messages that could never be delivered (or ran out of attempts), with the reason; kept until
-- `pgconnector dead-letters retry` re-queues them or `purge` drops them. payload is the exact
-- text that was to be published (text, not jsonb, which would reorder its keys).
CREATE TABLE IF NOT EXISTS {schema}.dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text        NOT NULL,   -- the message's id (idempotency key)
    table_schema text       NOT NULL,
    table_name  text        NOT NULL,
    op          text        NOT NULL,
    publisher   text        NOT NULL,
    channel     text        NOT NULL,
    payload     text        NOT NULL,
    error       text        NOT NULL,
    attempts    integer     NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    name        text        NOT NULL DEFAULT '',   -- the message name (Ably), for a retry
    key_columns text[]      NOT NULL DEFAULT '{}'  -- the table's primary key, for a retry
);
-- Installs from before these columns: add them, and keep payloads as text.
ALTER TABLE {schema}.dead_letters ADD COLUMN IF NOT EXISTS name text NOT NULL DEFAULT '';
ALTER TABLE {schema}.dead_letters ADD COLUMN IF NOT EXISTS key_columns text[] NOT NULL DEFAULT '{}';
DO $do$
BEGIN
    IF (SELECT atttypid FROM pg_catalog.pg_attribute
        WHERE attrelid = '{schema}.dead_letters'::regclass AND attname = 'payload')
       = 'jsonb'::regtype THEN
        ALTER TABLE {schema}.dead_letters ALTER COLUMN payload TYPE text;
    END IF;
END
$do$;

-- Messages waiting for a publisher that is down (or re-queued dead letters): the outbox row
-- is consumed, the message waits here, in id order per publisher, until the publisher is back
-- or its retry limits (publishers.X.retry) move it to dead_letters. So one publisher being
-- down neither stops the others nor fills the daemon's memory.
CREATE TABLE IF NOT EXISTS {schema}.parked (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    publisher       text        NOT NULL,
    channel         text        NOT NULL,
    name            text        NOT NULL,
    message_id      text        NOT NULL,
    table_schema    text        NOT NULL,
    table_name      text        NOT NULL,
    op              text        NOT NULL,
    key_columns     text[]      NOT NULL,
    payload         text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    route           integer     NOT NULL   -- index in the config's routes (-1: not known)
);
ALTER TABLE {schema}.parked ADD COLUMN IF NOT EXISTS route integer NOT NULL DEFAULT -1;
CREATE INDEX IF NOT EXISTS parked_publisher_id ON {schema}.parked (publisher, id);

-- The capture function shared by every captured table. SECURITY DEFINER so the application's
-- role needs no privilege on {schema}. It has no `SET search_path` clause on purpose: that clause
-- makes every call save and restore the setting and rebuild the namespace cache, which cost 5 %
-- of 8-client write throughput (bench/RESULTS.md). Instead nothing in the body resolves through
-- the caller's search_path: tables are schema-qualified, functions are pg_catalog-qualified and
-- operators are written OPERATOR(pg_catalog.=) (tests/integration/test_install.py plants a
-- hostile schema first on the path to prove it). Keep it that way when editing.
-- Wake-up: a NOTIFY only while the consumer dozes, waiting for one (it holds advisory lock 3,
-- sql/doze.sql), and then only from the one transaction holding lock 1, so concurrent commits
-- are not serialised on the notify queue lock (BASELINE.md); the daemon's polling covers the
-- others. While the consumer is busy or stopped a write sends nothing: it takes lock 3 shared
-- (until commit, which is what keeps the consumer from dozing past this row) and that is all.
CREATE OR REPLACE FUNCTION {schema}.capture_v1() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op, new_row)
        VALUES (pg_catalog.pg_current_xact_id(), pg_catalog.clock_timestamp(), TG_RELID, 'i',
                pg_catalog.to_json(NEW));
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op, old_row, new_row)
        VALUES (pg_catalog.pg_current_xact_id(), pg_catalog.clock_timestamp(), TG_RELID, 'u',
                pg_catalog.to_json(OLD), pg_catalog.to_json(NEW));
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op, old_row)
        VALUES (pg_catalog.pg_current_xact_id(), pg_catalog.clock_timestamp(), TG_RELID, 'd',
                pg_catalog.to_json(OLD));
    ELSE
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op)
        VALUES (pg_catalog.pg_current_xact_id(), pg_catalog.clock_timestamp(), TG_RELID, 't');
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock_shared(1885823843, 3)
       AND pg_catalog.pg_try_advisory_xact_lock(1885823843, 1) THEN
        PERFORM pg_catalog.pg_notify('pgconnector_wakeup', '');
    END IF;
    RETURN NULL;
END
$fn$;

INSERT INTO {schema}.meta (key, value) VALUES ('schema_version', '1')
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
