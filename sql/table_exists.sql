-- $1 schema, $2 table (unquoted names): the table's oid and kind, or no row.
SELECT c.oid AS relid, c.relkind
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2;
