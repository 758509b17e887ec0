-- Re-queue dead letters $1 (ids) for their publishers, in their order: they leave the dead
-- letters and wait as parked messages, which the active daemon delivers (with fresh attempt
-- counts). The caller sends a wake-up after commit.
WITH picked AS (
    DELETE FROM {schema}.dead_letters WHERE id = ANY ($1::bigint[])
    RETURNING *
)
INSERT INTO {schema}.parked
    (publisher, channel, name, message_id, table_schema, table_name, op, key_columns, payload,
     attempts, last_error, route)
SELECT publisher, channel, name, event_id, table_schema, table_name, op, key_columns, payload,
       0, NULL, -1
FROM picked
ORDER BY id
RETURNING id;
