-- Migration 0007: each operator's applied position (README "Operators"). The daemon writes its
-- row in the transaction that applies a batch's changes, so with the wal source a change
-- already applied is skipped after a restart; `pgconnector status` shows it. Keyed by the
-- operator's sink name (operator:<name>), as its dead letters and parked changes are.
CREATE TABLE {schema}.operators (
    name text PRIMARY KEY,
    commit_lsn bigint NOT NULL,  -- wal: the change's transaction's commit position; trigger: 0
    change_lsn bigint NOT NULL,  -- wal: the change's own position; trigger: its outbox id
    event_id text NOT NULL,      -- the last change applied
    changes bigint NOT NULL DEFAULT 0,  -- changes taken by the operator (applied, parked, dead)
    applied_at timestamptz NOT NULL DEFAULT now()
);
