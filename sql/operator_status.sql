-- Every operator that applied something, with what waits for it and what it gave up on.
SELECT o.name, o.commit_lsn, o.change_lsn, o.event_id, o.changes, o.applied_at,
       (SELECT count(*) FROM {schema}.dead_letters d WHERE d.publisher = o.name) AS dead_letters,
       (SELECT count(*) FROM {schema}.parked p WHERE p.publisher = o.name) AS parked
FROM {schema}.operators o
ORDER BY o.name;
