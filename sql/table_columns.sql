-- Columns of the tables named by the parallel arrays $1 (schemas) and $2 (tables), in column
-- order: the type as format_type() writes it, for a domain the first non-domain type under it
-- (through domains over domains), whether that type is an enum, the position in the primary
-- key (null when not part of it) and whether the column is generated.
SELECT t.schema_name, t.table_name, a.attname::text AS column_name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name,
       CASE WHEN ty.typtype = 'd' THEN base.type_name END AS base_type,
       coalesce(base.typtype, ty.typtype) = 'e' AS is_enum,
       array_position(i.indkey::int2[], a.attnum) AS key_position,
       a.attgenerated <> '' AS generated
FROM unnest($1::text[], $2::text[]) AS t(schema_name, table_name)
JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.table_name
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
LEFT JOIN LATERAL (
    WITH RECURSIVE chain(oid, typmod, typtype, depth) AS (
        SELECT ty.typbasetype, ty.typtypmod, NULL::"char", 0 WHERE ty.typtype = 'd'
        UNION ALL
        SELECT CASE WHEN b.typtype = 'd' THEN b.typbasetype ELSE b.oid END,
               CASE WHEN b.typtype = 'd' THEN b.typtypmod ELSE chain.typmod END,
               b.typtype, chain.depth + 1
        FROM chain JOIN pg_catalog.pg_type b ON b.oid = chain.oid
        WHERE chain.typtype IS DISTINCT FROM 'x' AND (chain.depth = 0 OR chain.typtype = 'd')
    )
    SELECT pg_catalog.format_type(chain.oid, chain.typmod) AS type_name,
           (SELECT typtype FROM pg_catalog.pg_type WHERE oid = chain.oid) AS typtype
    FROM chain ORDER BY depth DESC LIMIT 1
) AS base ON true
LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary
ORDER BY t.schema_name, t.table_name, a.attnum;
