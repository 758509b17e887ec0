-- The session holding the consumer lock of this installation ($1 = lock key), if any.
-- idle_seconds: how long its session has been waiting for the client (NULL while a query
-- runs), which tells an unresponsive active instance from a busy one.
SELECT a.pid, a.application_name, a.client_addr::text AS client_addr, a.backend_start,
       CASE WHEN a.state LIKE 'idle%'
            THEN extract(epoch FROM pg_catalog.clock_timestamp() - a.state_change)::float8
       END AS idle_seconds
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.classid = 1885823844 AND l.objid::bigint = ($1::int::bigint & 4294967295) AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database());
