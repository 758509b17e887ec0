-- The name of type $1 as a cast can use it.
SELECT pg_catalog.format_type($1, NULL);
