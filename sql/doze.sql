-- The consumer is about to wait for a wake-up: while its session holds this lock, writers send
-- one (sql/install.sql, capture_v1). Taken only when no writer that ran the capture function
-- without seeing it is still open (each holds it shared until commit), so every change is
-- either visible to the check that follows or followed by a wake-up.
SELECT pg_catalog.pg_try_advisory_lock(1885823843, 3) AS dozing;
