-- An operator's lock, exclusive, until the transaction ends: one chunk of a rebuild (see
-- sql/operator_lock.sql). $1 = '<schema>/<operator name>'.
SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgconnector.operator'),
                                        pg_catalog.hashtext($1));
