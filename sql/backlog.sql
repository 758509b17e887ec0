-- Outbox backlog: rows waiting and the age of the oldest, in seconds.
SELECT count(*) AS pending,
       extract(epoch FROM clock_timestamp() - min(captured_at))::float8 AS oldest_age
FROM {schema}.outbox;
