-- End the walsender that streams slot $1 (not this session): an instance that lost the lease.
SELECT pg_catalog.pg_terminate_backend(active_pid) AS ended, active_pid AS pid
FROM pg_catalog.pg_replication_slots
WHERE slot_name = $1 AND active_pid IS NOT NULL AND active_pid <> pg_catalog.pg_backend_pid();
