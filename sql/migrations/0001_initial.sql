-- Migration 0001: the first layout of the connector's tables (sql/install.sql as first
-- released). Run once, in install's transaction, by connector/store/install.py `migrate`; later
-- changes are later files here, never edits of this one.

-- IF NOT EXISTS: the schema may be one the user made (to grant on it, or holding their own
-- objects, which uninstall then leaves in place).
CREATE SCHEMA IF NOT EXISTS {schema};

-- One row per key; 'schema_version' is the number of the last migration applied here.
CREATE TABLE {schema}.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- What install put on user tables, so reconcile and uninstall touch exactly that.
CREATE TABLE {schema}.installed_tables (
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
CREATE TABLE {schema}.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid        xid8        NOT NULL,
    captured_at timestamptz NOT NULL,
    relid       oid         NOT NULL,
    op          "char"      NOT NULL,   -- i u d t
    old_row     jsonb,
    new_row     jsonb
);

-- Changes that could never be delivered (or ran out of attempts), with the reason.
CREATE TABLE {schema}.dead_letters (
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
