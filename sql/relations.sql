-- Schema and table names of the relations $1 (oids) the outbox names: the live names, or for a
-- table dropped since, the names install recorded. Relations known by neither are absent.
SELECT u.relid,
       coalesce(n.nspname, t.table_schema) AS schema_name,
       coalesce(r.relname, t.table_name) AS table_name
FROM unnest($1::oid[]) AS u(relid)
LEFT JOIN pg_catalog.pg_class r ON r.oid = u.relid
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
LEFT JOIN {schema}.installed_tables t ON r.oid IS NULL AND t.relid = u.relid
WHERE coalesce(n.nspname, t.table_schema) IS NOT NULL;
