-- Values whose JSON form only PostgreSQL knows (arrays, composites, enums, ranges, extension
-- types), from their text form, in order. {type} is format_type() of the column's type.
SELECT pg_catalog.to_json(v::{type})::text AS value
FROM unnest($1::text[]) WITH ORDINALITY AS u(v, i)
ORDER BY i;
