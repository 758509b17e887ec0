-- Dead letters $1 (ids) in full, oldest first.
SELECT id, event_id, table_schema, table_name, op, publisher, channel, name, error, attempts,
       failed_at, payload
FROM {schema}.dead_letters
WHERE id = ANY ($1::bigint[])
ORDER BY id;
