-- Migration 0003: parked messages carry their route (index in the config's routes), for the
-- per-route metrics.

-- Messages parked before this say -1 (not known). No default afterwards, as in a fresh
-- install of that release: every writer names the route (sql/park.sql,
-- sql/dead_letters_retry.sql).
ALTER TABLE {schema}.parked ADD COLUMN route integer NOT NULL DEFAULT -1;
ALTER TABLE {schema}.parked ALTER COLUMN route DROP DEFAULT;
