-- Parked messages $1 (ids) failed once more, with errors $2 (same order).
UPDATE {schema}.parked p
SET attempts = p.attempts + 1, last_error = u.error
FROM unnest($1::bigint[], $2::text[]) AS u(id, error)
WHERE p.id = u.id;
