-- An operator's lock, shared, until the transaction ends: the daemon takes it before applying a
-- batch; `operators rebuild` takes it exclusively per chunk (sql/operator_lock_exclusive.sql),
-- so a chunk never writes a key from reads older than the daemon's write, or the reverse.
-- $1 = '<schema>/<operator name>'.
SELECT pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('pgconnector.operator'),
                                               pg_catalog.hashtext($1));
