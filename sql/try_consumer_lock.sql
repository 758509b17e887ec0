-- Session-level: held until the connection ends, so a dead daemon frees it.
SELECT pg_try_advisory_lock(1885823844, $1) AS acquired;
