-- Which transactions have committed as of now (xmin:xmax:xip), taken when a handler's
-- subscription is attached: their changes came before it.
SELECT pg_catalog.pg_current_snapshot()::text;
