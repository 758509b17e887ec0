-- Primary key columns, in key order, of the tables named by the parallel arrays $1 (schemas)
-- and $2 (tables). Tables without a primary key are simply absent.
SELECT t.schema_name, t.table_name,
       array_agg(a.attname::text ORDER BY k.ord) AS columns
FROM unnest($1::text[], $2::text[]) AS t(schema_name, table_name)
JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.table_name
JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
GROUP BY t.schema_name, t.table_name;
