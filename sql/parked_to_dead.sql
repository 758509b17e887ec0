-- Parked messages $1 (ids) give up: they move to dead_letters with errors $2 and attempt
-- counts $3 (same order), keeping their order.
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[]) AS u(id, error, attempts)
), moved AS (
    DELETE FROM {schema}.parked p USING input i WHERE p.id = i.id
    RETURNING p.*, i.error AS final_error, i.attempts AS final_attempts
)
INSERT INTO {schema}.dead_letters
    (event_id, table_schema, table_name, op, publisher, channel, payload, error, attempts,
     name, key_columns)
SELECT message_id, table_schema, table_name, op, publisher, channel, payload, final_error,
       final_attempts, name, key_columns
FROM moved
ORDER BY id;
