-- Cheap idle poll: has any WAL been written since the slot's position? (Not necessarily for
-- our tables; the read that follows tells.)
SELECT confirmed_flush_lsn OPERATOR(pg_catalog.<) pg_catalog.pg_current_wal_insert_lsn()
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1;
