-- Runs in the claim transaction: the messages leave the outbox and land here atomically.
-- One row per element of the arrays, in order; key_columns are JSON arrays of names.
INSERT INTO {schema}.dead_letters
    (event_id, table_schema, table_name, op, publisher, channel, payload, error, attempts,
     name, key_columns)
SELECT u.event_id, u.table_schema, u.table_name, u.op, u.publisher, u.channel, u.payload,
       u.error, u.attempts, u.name,
       ARRAY(SELECT pg_catalog.jsonb_array_elements_text(u.key_columns::jsonb))
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::int[], $10::text[], $11::text[])
     WITH ORDINALITY AS u(event_id, table_schema, table_name, op, publisher, channel, payload,
                          error, attempts, name, key_columns, n)
ORDER BY u.n;
