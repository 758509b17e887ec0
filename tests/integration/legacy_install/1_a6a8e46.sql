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

-- Changes that could never be delivered (or ran out of attempts), with the reason.
CREATE TABLE IF NOT EXISTS {schema}.dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text        NOT NULL,
    table_schema text       NOT NULL,
    table_name  text        NOT NULL,
    op          text        NOT NULL,
    publisher   text        NOT NULL,
    channel     text        NOT NULL,
    payload     jsonb       NOT NULL,
    error       text        NOT NULL,
    attempts    integer     NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);

-- The capture function shared by every captured table. SECURITY DEFINER so the application's
-- role needs no privilege on {schema}; the fixed search_path keeps it from resolving names
-- through the caller's path. Wake-up: only the transaction holding the transaction-level
-- advisory lock (one at a time) sends a NOTIFY, so concurrent commits are not serialised on
-- the notify queue lock (BASELINE.md); the daemon's polling covers the others.
CREATE OR REPLACE FUNCTION {schema}.capture_v1() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op, new_row)
        VALUES (pg_current_xact_id(), clock_timestamp(), TG_RELID, 'i', to_jsonb(NEW));
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op, old_row, new_row)
        VALUES (pg_current_xact_id(), clock_timestamp(), TG_RELID, 'u', to_jsonb(OLD), to_jsonb(NEW));
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op, old_row)
        VALUES (pg_current_xact_id(), clock_timestamp(), TG_RELID, 'd', to_jsonb(OLD));
    ELSE
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op)
        VALUES (pg_current_xact_id(), clock_timestamp(), TG_RELID, 't');
    END IF;
    IF pg_try_advisory_xact_lock(1885823843, 1) THEN
        PERFORM pg_notify('pgconnector_wakeup', '');
    END IF;
    RETURN NULL;
END
$fn$;

INSERT INTO {schema}.meta (key, value) VALUES ('schema_version', '1')
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
