-- The slot's state for the gauges and `status` ($1 = slot); no row when it does not exist.
-- lag_bytes: how far the confirmed position is behind the WAL's end (not all of it is changes
-- of ours); retained_bytes: the WAL the slot keeps the server from removing; safe_wal_size:
-- what may still be written before the slot is invalidated (NULL without a
-- max_slot_wal_keep_size); wal_status: reserved, extended, unreserved or lost.
SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(),
                                  confirmed_flush_lsn)::bigint AS lag_bytes,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(),
                                  restart_lsn)::bigint AS retained_bytes,
       safe_wal_size, wal_status, active,
       pg_catalog.pg_size_bytes(
           NULLIF(pg_catalog.current_setting('max_slot_wal_keep_size'), '-1')) AS keep_bytes
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1;
