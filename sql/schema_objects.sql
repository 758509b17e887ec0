-- $1 schema: how many objects still live in it (uninstall drops it only when none are left).
SELECT count(*) AS objects
FROM pg_catalog.pg_depend d
JOIN pg_catalog.pg_namespace n ON d.refobjid = n.oid
WHERE d.refclassid = 'pg_catalog.pg_namespace'::regclass AND n.nspname = $1;
