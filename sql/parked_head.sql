-- The oldest parked messages of publisher $1 (at most $2), while the session $3 still holds
-- the consumer lock $4 (a drain runs on a second connection: when the lock's session is gone,
-- another instance may be active, so this one must not publish). Locked: an operator's drain
-- (connector/delivery/parking.py) reads them in the transaction that applies and settles them,
-- so no other drain can apply them too.
SELECT p.id, p.channel, p.name, p.message_id, p.table_schema, p.table_name, p.op,
       p.key_columns, p.payload, p.attempts, p.route,
       extract(epoch FROM pg_catalog.clock_timestamp() - p.first_failed_at)::float8 AS age
FROM {schema}.parked p
WHERE p.publisher = $1
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
              WHERE l.pid = $3 AND l.locktype = 'advisory' AND l.granted
                AND l.classid = 1885823844 AND l.objid::bigint = ($4::int::bigint & 4294967295)
                AND l.objsubid = 2)
ORDER BY p.id
LIMIT $2
FOR UPDATE OF p;
