-- Whether column $3 of table $1.$2 fits an operator's $1 of type $4 (an oid): the same type
-- (domains by their base type), or one PostgreSQL casts to it implicitly or on assignment.
SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) AS column_type,
       pg_catalog.format_type($4::oid, NULL) AS parameter_type,
       coalesce(nullif(t.typbasetype, 0), a.atttypid) = $4::oid
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_cast c
                  WHERE c.castsource = coalesce(nullif(t.typbasetype, 0), a.atttypid)
                    AND c.casttarget = $4::oid AND c.castcontext IN ('i', 'a')) AS fits
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = (pg_catalog.quote_ident($1) || '.' || pg_catalog.quote_ident($2))::regclass
  AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped;
