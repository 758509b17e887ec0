-- $1 schema. Releases before numbered migrations recorded schema_version '1' whatever their
-- layout, and changed it in place: each row says whether the change migration <version> makes
-- is there. Each of those releases applied every earlier change too, so the ones there are
-- 2..n, and the installation stands at n (connector/store/install.py `_adopt_legacy`). The list is
-- complete: the last release without migrations had the layout of 0005.
SELECT v.version,
       EXISTS (SELECT
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_catalog.pg_attribute a
                      ON a.attrelid = c.oid AND a.attname = v.attname AND NOT a.attisdropped
               WHERE n.nspname = $1 AND c.relname = v.relname AND c.relkind = 'r'
                 AND (v.attname IS NULL OR a.attnum IS NOT NULL)
                 AND (v.typname IS NULL
                      OR pg_catalog.format_type(a.atttypid, NULL) = v.typname)) AS present
FROM (VALUES (2, 'parked', NULL, NULL),
             (3, 'parked', 'route', NULL),
             (4, 'outbox', 'new_row', 'json'),
             (5, 'installed_tables', 'prior_identity', NULL))
     AS v (version, relname, attname, typname)
ORDER BY v.version;
