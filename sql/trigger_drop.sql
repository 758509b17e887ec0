DROP TRIGGER IF EXISTS {insert_trigger} ON {table};
DROP TRIGGER IF EXISTS {update_trigger} ON {table};
DROP TRIGGER IF EXISTS {delete_trigger} ON {table};
DROP TRIGGER IF EXISTS {truncate_trigger} ON {table};
-- the single insert/update/delete trigger of earlier releases
DROP TRIGGER IF EXISTS {row_trigger} ON {table};
