-- Which of the publishers $1 have parked messages (an index probe each).
SELECT p.name
FROM unnest($1::text[]) AS p(name)
WHERE EXISTS (SELECT 1 FROM {schema}.parked WHERE publisher = p.name);
