-- $1 schema name: whether it exists and whether it holds a pgconnector installation.
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1) AS schema_exists,
       to_regclass(pg_catalog.quote_ident($1) || '.meta') IS NOT NULL AS installed;
