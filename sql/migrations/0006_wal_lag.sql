-- Migration 0006: the lag the wal source's last heartbeat measured, for `pgconnector status`
-- (the daemon keeps it in memory for /metrics). One row per slot; the streaming role writes it.
CREATE TABLE {schema}.wal_lag (
    slot text PRIMARY KEY,
    lag_seconds double precision NOT NULL,
    measured_at timestamptz NOT NULL DEFAULT now()
);
