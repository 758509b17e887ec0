-- Migration 0002: parking, so a publisher that stays down no longer holds up the others.

-- Dead letters keep what `pgconnector dead-letters retry` needs to re-queue them, and their
-- payload as the exact text that was to be published (jsonb would reorder its keys).
ALTER TABLE {schema}.dead_letters
    ADD COLUMN name        text   NOT NULL DEFAULT '',   -- the message name (Ably)
    ADD COLUMN key_columns text[] NOT NULL DEFAULT '{}', -- the table's primary key
    ALTER COLUMN payload TYPE text;

-- Messages waiting for a publisher that is down (or re-queued dead letters): the outbox row
-- is consumed, the message waits here, in id order per publisher, until the publisher is back
-- or its retry limits (publishers.X.retry) move it to dead_letters. So one publisher being
-- down neither stops the others nor fills the daemon's memory.
CREATE TABLE {schema}.parked (
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
CREATE INDEX parked_publisher_id ON {schema}.parked (publisher, id);
