SELECT (SELECT value FROM {schema}.meta WHERE key = 'schema_version') AS schema_version,
       (SELECT count(*) FROM {schema}.dead_letters) AS dead_letters;
