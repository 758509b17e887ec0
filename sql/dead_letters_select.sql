-- Dead letters matching the filters, oldest first (ids and publishers only: retry and purge
-- never load payloads); a NULL filter matches everything.
-- $1 publisher, $2 table schema, $3 table name, $4 older than (seconds), $5 newer than
-- (seconds), $6 ids, $7 most rows.
SELECT id, publisher
FROM {schema}.dead_letters
WHERE ($1::text IS NULL OR publisher = $1)
  AND ($2::text IS NULL OR table_schema = $2)
  AND ($3::text IS NULL OR table_name = $3)
  AND ($4::float8 IS NULL
       OR failed_at < pg_catalog.clock_timestamp() - pg_catalog.make_interval(secs => $4))
  AND ($5::float8 IS NULL
       OR failed_at >= pg_catalog.clock_timestamp() - pg_catalog.make_interval(secs => $5))
  AND ($6::bigint[] IS NULL OR id = ANY ($6))
ORDER BY id
LIMIT $7;
