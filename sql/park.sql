-- Runs in the claim transaction: messages for a publisher that is down leave the outbox with
-- their batch and wait here, in order. One row per element of the arrays; key_columns are
-- JSON arrays of names; errors/attempts say what already failed (NULL/0: not tried yet).
INSERT INTO {schema}.parked
    (publisher, channel, name, message_id, table_schema, table_name, op, key_columns, payload,
     attempts, last_error, route)
SELECT u.publisher, u.channel, u.name, u.message_id, u.table_schema, u.table_name, u.op,
       ARRAY(SELECT pg_catalog.jsonb_array_elements_text(u.key_columns::jsonb)), u.payload,
       u.attempts, u.error, u.route
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::int[], $11::text[], $12::int[])
     WITH ORDINALITY AS u(publisher, channel, name, message_id, table_schema, table_name, op,
                          key_columns, payload, attempts, error, route, n)
ORDER BY u.n;
