-- Runs in the claim transaction: the event leaves the outbox and lands here atomically.
INSERT INTO {schema}.dead_letters
    (event_id, table_schema, table_name, op, publisher, channel, payload, error, attempts)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9);
