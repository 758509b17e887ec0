-- While our tables are quiet, write a non-transactional message into the WAL when the slot
-- is more than $2 bytes behind its end: decoding it tells the source everything before it was
-- read, so the slot can move there instead of holding back WAL. $1 = slot, $3 = prefix.
SELECT pg_catalog.pg_logical_emit_message(false, $3, '')
FROM pg_catalog.pg_replication_slots
WHERE slot_name = $1
  AND pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(), confirmed_flush_lsn) > $2;
