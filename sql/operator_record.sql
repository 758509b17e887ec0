-- Runs in the transaction that applied a batch: each operator's last change in it. One row per
-- element of the arrays.
INSERT INTO {schema}.operators AS o (name, commit_lsn, change_lsn, event_id, changes, applied_at)
SELECT u.name, u.commit_lsn, u.change_lsn, u.event_id, u.changes, pg_catalog.now()
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[])
     AS u(name, commit_lsn, change_lsn, event_id, changes)
ON CONFLICT (name) DO UPDATE
SET commit_lsn = excluded.commit_lsn, change_lsn = excluded.change_lsn,
    event_id = excluded.event_id, changes = o.changes + excluded.changes,
    applied_at = excluded.applied_at;
