-- The part of an installation that is re-applied by every install, after the numbered
-- migrations in sql/migrations/ have brought the tables to this release's layout
-- (connector/store/install.py). Tables change only through those migrations, each applied once and
-- recorded. A function is different: CREATE OR REPLACE puts this release's definition in place
-- whatever the last one was, so a migration per edit of its body would only replay old bodies
-- that nothing runs. Triggers on user tables call it by name, so its name and signature stay
-- fixed: another signature would be another function (capture_v2), and removing this one a
-- migration.
-- {schema} is replaced by the quoted schema identifier before this runs (connector/store/queries.py).

-- The capture function shared by every captured table. SECURITY DEFINER so the application's
-- role needs no privilege on {schema}. It has no `SET search_path` clause on purpose: that clause
-- makes every call save and restore the setting and rebuild the namespace cache, which cost 5 %
-- of 8-client write throughput (bench/RESULTS.md). Instead nothing in the body resolves through
-- the caller's search_path: tables are schema-qualified, functions are pg_catalog-qualified and
-- operators are written OPERATOR(pg_catalog.=) (tests/integration/test_install.py plants a
-- hostile schema first on the path to prove it). Keep it that way when editing.
-- Wake-up: a NOTIFY only while the consumer dozes, waiting for one (it holds advisory lock 3,
-- sql/doze.sql), and then only from the one transaction holding lock 1, so concurrent commits
-- are not serialised on the notify queue lock (README "How it works"); polling covers the
-- others. While the consumer is busy or stopped a write sends nothing: it takes lock 3 shared
-- (until commit, which is what keeps the consumer from dozing past this row) and that is all.
CREATE OR REPLACE FUNCTION {schema}.capture_v1() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op, new_row)
        VALUES (pg_catalog.pg_current_xact_id(), pg_catalog.clock_timestamp(), TG_RELID, 'i',
                pg_catalog.to_json(NEW));
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op, old_row, new_row)
        VALUES (pg_catalog.pg_current_xact_id(), pg_catalog.clock_timestamp(), TG_RELID, 'u',
                pg_catalog.to_json(OLD), pg_catalog.to_json(NEW));
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op, old_row)
        VALUES (pg_catalog.pg_current_xact_id(), pg_catalog.clock_timestamp(), TG_RELID, 'd',
                pg_catalog.to_json(OLD));
    ELSE
        INSERT INTO {schema}.outbox (txid, captured_at, relid, op)
        VALUES (pg_catalog.pg_current_xact_id(), pg_catalog.clock_timestamp(), TG_RELID, 't');
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock_shared(1885823843, 3)
       AND pg_catalog.pg_try_advisory_xact_lock(1885823843, 1) THEN
        PERFORM pg_catalog.pg_notify('pgconnector_wakeup', '');
    END IF;
    RETURN NULL;
END
$fn$;
