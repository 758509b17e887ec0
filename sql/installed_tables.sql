-- What install recorded, with how many of its triggers ($1, the names) are still in place.
SELECT t.table_schema, t.table_name, t.relid, t.operations, t.config_hash, t.installed_at,
       t.prior_identity,
       c.oid IS NOT NULL AS table_exists,
       (SELECT count(*) FROM pg_catalog.pg_trigger g
         WHERE g.tgrelid = c.oid AND g.tgname = ANY ($1::text[])) AS trigger_count
FROM {schema}.installed_tables t
LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = t.table_schema
LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.table_name
ORDER BY t.table_schema, t.table_name;
