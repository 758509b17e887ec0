-- The slot of an installation, if it exists ($1 = slot).
SELECT plugin, database = pg_catalog.current_database() AS here, active, wal_status
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1;
