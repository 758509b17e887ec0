-- An installation made before numbered migrations whose parked table predates its route
-- column got that column in place with DEFAULT -1; a fresh install of the same release (and
-- migration 0003) has no default. Dropped, so every installation at 3 or later is alike.
ALTER TABLE {schema}.parked ALTER COLUMN route DROP DEFAULT;
