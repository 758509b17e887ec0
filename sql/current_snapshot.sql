-- Which transactions have committed as of now (xmin:xmax:xip): taken when a handler's
-- subscription is attached (their changes came before it), and by an operator waiting until
-- the wal source's transactions are visible (connector/operators.py).
SELECT pg_catalog.pg_current_snapshot()::text;
