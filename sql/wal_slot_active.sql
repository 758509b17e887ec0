-- Whether slot $1 is being streamed.
SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1;
