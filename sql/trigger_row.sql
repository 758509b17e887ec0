-- One row trigger per operation. {events} is INSERT, UPDATE [OF <quoted columns>] or DELETE;
-- {when} is empty or WHEN (<condition>) compiled from the routes' filters by
-- connector/pushdown.py (quoted identifiers; values as escaped, typed literals, because a
-- trigger's WHEN clause cannot take bind parameters).
CREATE TRIGGER {row_trigger} AFTER {events} ON {table}
FOR EACH ROW {when} EXECUTE FUNCTION {schema}.capture_v1();
