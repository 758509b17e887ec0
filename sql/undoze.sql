-- The consumer is busy (batches come full): writers stop sending wake-ups.
SELECT pg_catalog.pg_advisory_unlock(1885823843, 3);
