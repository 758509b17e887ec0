-- A rebuild's keys from one of the operator's tables, as JSON (as events carry them).
SELECT DISTINCT pg_catalog.to_json({column})::text AS key FROM {table} WHERE {column} IS NOT NULL;
