-- A handler detached: the messages parked for it ($1) go (it asked for no more).
WITH gone AS (DELETE FROM {schema}.parked WHERE publisher = $1 RETURNING 1)
SELECT count(*) FROM gone;
