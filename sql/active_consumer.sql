-- The session holding the consumer lock of this installation ($1 = lock key), if any.
SELECT a.pid, a.application_name, a.client_addr::text AS client_addr, a.backend_start
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.classid = 1885823844 AND l.objid::bigint = ($1::int::bigint & 4294967295) AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database());
