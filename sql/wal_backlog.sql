-- How far behind the WAL's end the slot is, in bytes (not all of it is changes of ours).
SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(),
                                  confirmed_flush_lsn)::bigint AS lag_bytes,
       active, wal_status
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1;
