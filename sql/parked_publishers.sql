-- Publishers with parked messages: how many, and the age of the oldest first failure.
SELECT publisher, count(*) AS messages,
       extract(epoch FROM pg_catalog.clock_timestamp() - min(first_failed_at))::float8
           AS oldest_age
FROM {schema}.parked
GROUP BY publisher
ORDER BY publisher;
