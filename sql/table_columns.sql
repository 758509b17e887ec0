-- Columns of the tables named by the parallel arrays $1 (schemas) and $2 (tables), in column
-- order: the type as format_type() writes it, for a domain the type underneath it, whether the
-- (base) type is an enum, and the position in the primary key (null when not part of it).
SELECT t.schema_name, t.table_name, a.attname::text AS column_name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name,
       CASE WHEN ty.typtype = 'd'
            THEN pg_catalog.format_type(ty.typbasetype, ty.typtypmod) END AS base_type,
       coalesce(bt.typtype, ty.typtype) = 'e' AS is_enum,
       array_position(i.indkey::int2[], a.attnum) AS key_position,
       a.attgenerated <> '' AS generated
FROM unnest($1::text[], $2::text[]) AS t(schema_name, table_name)
JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.table_name
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
LEFT JOIN pg_catalog.pg_type bt ON ty.typtype = 'd' AND bt.oid = ty.typbasetype
LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary
ORDER BY t.schema_name, t.table_name, a.attnum;
