-- Drop dead letters $1 (ids) for good.
DELETE FROM {schema}.dead_letters WHERE id = ANY ($1::bigint[]) RETURNING id;
