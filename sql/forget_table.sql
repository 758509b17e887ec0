DELETE FROM {schema}.installed_tables WHERE table_schema = $1 AND table_name = $2;
