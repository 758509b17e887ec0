-- Remember the replica identity a table had before install set FULL (the first time only),
-- or forget it once restored ($3 NULL, $4 true).
UPDATE {schema}.installed_tables
SET prior_identity = CASE WHEN $4 THEN NULL ELSE coalesce(prior_identity, $3) END
WHERE table_schema = $1 AND table_name = $2;
