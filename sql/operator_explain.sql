-- The plan of an operator's SQL (prepared as pgconnector_operator_check, with $1 NULL, never
-- run): its ModifyTable nodes name the tables it writes, for the loop check.
EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE pgconnector_operator_check(NULL);
