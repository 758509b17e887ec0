-- The lag the wal source's last heartbeat measured ($1 = slot); -1 before the first.
SELECT lag_seconds, measured_at FROM {schema}.wal_lag WHERE slot = $1;
