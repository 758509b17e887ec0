-- End the session $1 (an unresponsive active instance's): its consumer lock is freed.
SELECT pg_catalog.pg_terminate_backend($1);
