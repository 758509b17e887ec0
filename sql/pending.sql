-- Cheap idle poll: is anything waiting? (one index probe, no transaction needed)
SELECT EXISTS (SELECT 1 FROM {schema}.outbox) AS pending;
