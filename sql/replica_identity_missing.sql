-- Tables among $1 (oids) whose updates and deletes PostgreSQL would refuse once published:
-- no primary key and replica identity default, or identity nothing.
SELECT c.oid::regclass::text AS table_name
FROM pg_catalog.pg_class c
WHERE c.oid = ANY ($1::oid[])
  AND (c.relreplident = 'n'
       OR (c.relreplident = 'd' AND NOT EXISTS (
           SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)));
