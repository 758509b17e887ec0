-- Outside any transaction that wrote (PostgreSQL's rule). $1 = slot.
SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput');
