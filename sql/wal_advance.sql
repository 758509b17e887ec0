-- Everything before $2 is delivered: let the server forget it. $1 = slot.
SELECT pg_catalog.pg_replication_slot_advance($1, $2::text::pg_catalog.pg_lsn);
