-- {events} is built from the fixed keywords INSERT / UPDATE / DELETE, never from config text.
CREATE TRIGGER {row_trigger} AFTER {events} ON {table}
FOR EACH ROW EXECUTE FUNCTION {schema}.capture_v1();
