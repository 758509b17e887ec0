-- Serialises concurrent installs/uninstalls of the same database.
SELECT pg_advisory_xact_lock(1885823843, 2);
