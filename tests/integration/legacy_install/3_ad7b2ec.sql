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

-- Every captured change, written by the capture trigger in the application's transaction and
-- deleted by the daemon in the transaction that publishes it. Kept narrow on purpose: each
-- byte here is paid by every application write (bench/RESULTS.md).
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid        xid8        NOT NULL,
    captured_at timestamptz NOT NULL,
    relid       oid         NOT NULL,
    op          "char"      NOT NULL,   -- i u d t
    old_row     jsonb,
    new_row     jsonb
);

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
    last_error      text
);
CREATE INDEX IF NOT EXISTS parked_publisher_id ON {schema}.parked (publisher, id);

-- The capture function shared by every captured table. SECURITY DEFINER so the application's
-- role needs no privilege on {schema}. It has no `SET search_path` clause on purpose: that clause
-- makes every call save and restore the setting and rebuild the namespace cache, which cost 5 %
-- of 8-client write throughput (bench/RESULTS.md). Instead nothing in the body resolves through
-- the caller's search_path: tables are schema-qualified, functions are pg_catalog-qualified and
-- operators are written OPERATOR(pg_catalog.=) (tests/integration/test_install.py plants a
-- hostile schema first on the path to prove it). Keep it that way when editing.
-- Wake-up: only the transaction holding the transaction-level advisory lock (one at a time)
-- sends a NOTIFY, so concurrent commits are not serialised on the notify queue lock
-- (BASELINE.md); the daemon's polling covers the others.
CREATE OR REPLACE FUNCTION {schema}.capture_v1() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op, new_row)
        VALUES (pg_catalog.pg_current_xact_id(), pg_catalog.clock_timestamp(), TG_RELID, 'i',
                pg_catalog.to_jsonb(NEW));
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op, old_row, new_row)
        VALUES (pg_catalog.pg_current_xact_id(), pg_catalog.clock_timestamp(), TG_RELID, 'u',
                pg_catalog.to_jsonb(OLD), pg_catalog.to_jsonb(NEW));
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op, old_row)
        VALUES (pg_catalog.pg_current_xact_id(), pg_catalog.clock_timestamp(), TG_RELID, 'd',
                pg_catalog.to_jsonb(OLD));
    ELSE
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op)
        VALUES (pg_catalog.pg_current_xact_id(), pg_catalog.clock_timestamp(), TG_RELID, 't');
    END IF;
    IF pg_catalog.pg_try_advisory_xact_lock(1885823843, 1) THEN
        PERFORM pg_catalog.pg_notify('pgconnector_wakeup', '');
    END IF;
    RETURN NULL;
END
$fn$;

INSERT INTO {schema}.meta (key, value) VALUES ('schema_version', '1')
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
