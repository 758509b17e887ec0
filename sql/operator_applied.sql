-- Where the operators $1 (sink names) stand: the last change each took (applied, parked or
-- dead-lettered), in the source's order.
SELECT name, commit_lsn, change_lsn FROM {schema}.operators WHERE name = ANY ($1::text[]);
