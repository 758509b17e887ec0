-- A table's replica identity (d default, f full, n nothing, i index) and its index if i.
SELECT c.relreplident::text AS identity,
       (SELECT ci.relname::text FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
        WHERE i.indrelid = c.oid AND i.indisreplident) AS index_name
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2;
