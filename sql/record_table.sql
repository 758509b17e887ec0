INSERT INTO {schema}.installed_tables (table_schema, table_name, relid, operations, config_hash)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (table_schema, table_name) DO UPDATE
SET relid = EXCLUDED.relid, operations = EXCLUDED.operations,
    config_hash = EXCLUDED.config_hash, installed_at = now();
