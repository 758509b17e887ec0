-- Cheap idle poll: is anything waiting? An index probe, not a scan: after a large drain the
-- heap is full of dead rows until vacuum, and a sequential scan would read them all each time.
SELECT EXISTS (SELECT 1 FROM (SELECT id FROM {schema}.outbox ORDER BY id LIMIT 1) AS head)
    AS pending;
