-- Which transactions have committed as of now (xmin:xmax:xip): taken when a handler's
-- subscription is attached (their changes came before it), and by the wal source's writer
-- waiting until a batch's transactions are visible (connector/readers/wal.py).
SELECT pg_catalog.pg_current_snapshot()::text;
