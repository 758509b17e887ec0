-- Parked messages of publisher $1 whose first failure is more than $2 seconds ago (at most
-- 10000 at a time), oldest first.
SELECT id, attempts, route, coalesce(last_error, 'not delivered') AS last_error
FROM {schema}.parked
WHERE publisher = $1
  AND first_failed_at < pg_catalog.clock_timestamp() - pg_catalog.make_interval(secs => $2)
ORDER BY id
LIMIT 10000;
